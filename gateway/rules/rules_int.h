/*
 * rules_int.h — internals shared by the rules engine's files (lexer, parser, evaluator,
 * functions, topic index, loader). Not a public header: only gateway/rules/ sources and the
 * rules unit tests include it.
 *
 * Design: the SQL text is lexed and parsed once at load into a tree of rules_node; every
 * function call is resolved to its implementation, literal regex patterns are compiled
 * (pcre2 + JIT) and argument counts are checked, so evaluation is a plain tree walk.
 * Values during evaluation are rules_val: a small tagged union that borrows strings and
 * JSON from the message or from the per-evaluation scratch arena (rules_ctx), so the hot
 * path allocates nothing except the output JSON. JSON created during evaluation (literal
 * objects, nested query results, decoded payloads) is registered with the context and
 * released when the message is done.
 */
#ifndef TG_RULES_INT_H
#define TG_RULES_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <math.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "core/msg.h"
#include "rules/rules.h"

/* ---- SQL versions ----------------------------------------------------------------- */
/* A rule's dialect, from its awsIotSqlVersion. The two differ in one respect, the one AWS's
 * data-types page describes: 2016-03-23 processes a whole-number numeric value such as 10.0
 * as the Int 10 where a value enters (SQL literals, the payload and any other JSON read) and
 * where it leaves (JSON output, the string form), so 10.0 / 4 is 2; 2015-10-08 keeps Int and
 * Decimal distinct whatever the value (10.0 / 4 is 2.5, 10.0 is written 10.0). The lexer
 * gets it at compile time, the evaluator through rules_ctx.ver. */
typedef enum {
	RULES_SQL_2016_03_23 = 0, /* the default */
	RULES_SQL_2015_10_08,
} rules_sql_version;

/* The whole numbers 2016-03-23 turns into an Int: those a double holds exactly (|d| < 2^53). */
static inline int rules_dec_is_whole(double d)
{
	return d == floor(d) && fabs(d) < 9.007199254740992e15;
}

/* ---- values ----------------------------------------------------------------------- */
typedef enum {
	RV_UNDEF = 0,
	RV_NULL,
	RV_BOOL,
	RV_INT,
	RV_DEC,
	RV_STR,
	RV_ARR,
	RV_OBJ,
} rules_vtype;

typedef struct rules_val {
	rules_vtype t;
	union {
		int b;
		int64_t i;
		double d;
		struct {
			const char *p;
			size_t n;
		} s;
		json_t *j; /* borrowed: from the message or kept alive by the context */
	} u;
} rules_val;

/* ---- tokens ----------------------------------------------------------------------- */
typedef enum {
	TK_EOF = 0,
	TK_ERR,
	TK_IDENT,
	TK_VAR,
	TK_INT,
	TK_DEC,
	TK_STR,
	TK_LPAREN,
	TK_RPAREN,
	TK_LBRACK,
	TK_RBRACK,
	TK_LBRACE,
	TK_RBRACE,
	TK_COMMA,
	TK_DOT,
	TK_COLON,
	TK_STAR,
	TK_PLUS,
	TK_MINUS,
	TK_SLASH,
	TK_PERCENT,
	TK_EQ,
	TK_NE,
	TK_LT,
	TK_LE,
	TK_GT,
	TK_GE,
	/* keywords */
	TK_SELECT,
	TK_FROM,
	TK_WHERE,
	TK_AS,
	TK_AND,
	TK_OR,
	TK_NOT,
	TK_CASE,
	TK_WHEN,
	TK_THEN,
	TK_ELSE,
	TK_END,
	TK_VALUE,
	TK_NULL,
	TK_TRUE,
	TK_FALSE,
	TK_SET,
} rules_tok_kind;

typedef struct rules_tok {
	rules_tok_kind k;
	size_t pos;     /* byte offset of the token's first char in the source */
	size_t len;     /* raw length in the source */
	char *str;      /* TK_STR: decoded (malloc'd, owned by the lexer until taken) */
	size_t slen;
	int64_t ival;
	double dval;
} rules_tok;

typedef struct rules_lexer {
	const char *src;
	size_t len;
	size_t pos;
	rules_sql_version ver; /* 2016-03-23 lexes a whole-number Decimal literal as an Int */
	rules_tok tok;     /* current token */
	size_t err_pos;
	char err[160];
} rules_lexer;

void rules_lex_init(rules_lexer *lx, const char *src, size_t len, size_t start, rules_sql_version ver);
int rules_lex_next(rules_lexer *lx); /* 0 or -1 (err/err_pos set) */
void rules_lex_free(rules_lexer *lx);
const char *rules_tok_name(rules_tok_kind k);

/* ---- compiled tree ------------------------------------------------------------------ */
typedef enum {
	RN_LIT = 1,   /* constant value (strings owned by the node) */
	RN_FIELD,     /* name: member of the current row */
	RN_VAR,       /* @name: SET variable, index in ival */
	RN_DOT,       /* a[0].name */
	RN_INDEX,     /* a[0][idx] */
	RN_NEG,
	RN_NOT,
	RN_AND,
	RN_OR,
	RN_BIN,       /* op in ival (TK_PLUS ...) */
	RN_CASE,      /* a[0] subject (NULL: searched CASE), pairs, else */
	RN_CALL,
	RN_CAST,      /* a[0], ival = target type */
	RN_OBJ,       /* object literal: names[] + a[] */
	RN_ARR,       /* array literal */
	RN_SUBQ,      /* nested SELECT: q */
	RN_STAR,      /* `*` as a function argument (encode(*, 'base64')) */
} rules_node_kind;

typedef enum { RC_STRING = 1, RC_INT, RC_DOUBLE, RC_DECIMAL, RC_BOOL } rules_cast_type;

struct rules_ctx;
struct rules_node;
typedef void (*rules_fn_impl)(struct rules_ctx *c, const struct rules_node *n, const rules_val *argv,
			      int argc, rules_val *out);

typedef struct rules_func {
	const char *name;
	int min_args, max_args;     /* max -1: variadic */
	rules_fn_impl fn;
	int regex_arg;              /* 0-based index of a regex pattern argument, or -1 */
	unsigned flags;
} rules_func;

enum {
	RF_UNSUPPORTED = 1 << 0, /* AWS service function: refused at load */
	RF_NONDETERMINISTIC = 1 << 1,
	RF_STAR_ARG = 1 << 2,    /* first argument may be `*` */
};

typedef struct rules_query rules_query;

typedef struct rules_node {
	rules_node_kind k;
	size_t pos;              /* offset in the source text for error messages */
	int depth;               /* height of the subtree: bounded so evaluation cannot overflow the stack */
	int64_t ival;
	char *name;              /* RN_FIELD / RN_DOT member, RN_CALL lower-cased name */
	rules_val lit;           /* RN_LIT */
	struct rules_node **a;   /* children */
	int na;
	char **names;            /* RN_OBJ keys */
	const rules_func *fn;    /* RN_CALL */
	pcre2_code *re;          /* RN_CALL with a literal regex */
	rules_query *q;          /* RN_SUBQ */
	json_t *cjson;           /* RN_LIT for constant arrays/objects, owned */
} rules_node;

typedef struct rules_item {
	rules_node *e;           /* NULL: `*` */
	char *alias;             /* output key (may be dotted a.b), NULL with `*` */
} rules_item;

struct rules_query {
	rules_item *items;
	int nitems;
	int value;               /* SELECT VALUE */
	char *from_topic;        /* top level: the topic filter */
	rules_node *from_expr;   /* nested: the array to iterate */
	rules_node *where;
};

typedef struct rules_stmt {
	int nvars;
	char **var_names;
	rules_node **var_exprs;
	rules_query *q;
	size_t from_pos;         /* offset of the FROM topic literal */
} rules_stmt;

/* Parse a whole statement in dialect ver. On error returns NULL with *err_pos and err set. */
rules_stmt *rules_parse_stmt(const char *src, size_t len, rules_sql_version ver, size_t *err_pos, char *err,
			     size_t errlen);
/* Parse one expression starting at offset start; the token after it must be `end`
 * (TK_EOF or TK_RBRACE). *end_pos receives the offset just after that token.
 * var_names lets templates and alert conditions reference the rule's SET variables. */
rules_node *rules_parse_expr(const char *src, size_t len, size_t start, rules_tok_kind end, rules_sql_version ver,
			     char **var_names, int nvars, size_t *end_pos, size_t *err_pos,
			     char *err, size_t errlen);
void rules_stmt_free(rules_stmt *st);
void rules_node_free(rules_node *n);

const rules_func *rules_func_lookup(const char *lname);

/* ---- evaluation context ------------------------------------------------------------ */
#define RULES_MAX_VARS 32
#define RULES_MAX_ARGS 16

typedef struct rules_chunk {
	struct rules_chunk *next;
	size_t cap, used;
	char data[];
} rules_chunk;

typedef struct rules_ctx {
	const tg_msg *m;
	const rules_env *env;
	rules_sql_version ver;       /* of the rule being evaluated: set before each rule */
	json_t *row;                 /* object fields are looked up in (message or nested row) */
	rules_val vars[RULES_MAX_VARS];
	int nvars;
	/* scratch arena: first chunk allocated once, extra chunks freed at reset */
	rules_chunk *arena;
	rules_chunk *first;
	json_t **refs;               /* JSON created during this evaluation */
	size_t nrefs, caprefs;
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	int err;                     /* runtime error (match limit, memory) */
	char errmsg[160];
	uint64_t rand_state;
} rules_ctx;

int rules_ctx_init(rules_ctx *c);
void rules_ctx_reset(rules_ctx *c);
void rules_ctx_free(rules_ctx *c);
void *rules_ctx_alloc(rules_ctx *c, size_t n); /* NULL sets c->err */
/* Keep j alive until the context is reset (steals the reference). Returns j. */
json_t *rules_ctx_keep(rules_ctx *c, json_t *j);

void rules_eval_node(rules_ctx *c, const rules_node *n, rules_val *out);
/* WHERE-style evaluation: true only for Boolean true (or "true"). */
int rules_eval_cond(rules_ctx *c, const rules_node *n);
/* Evaluate SELECT of q against c->row; returns a new JSON reference or NULL for
 * Undefined (SELECT VALUE only). */
json_t *rules_eval_select(rules_ctx *c, const rules_query *q);

/* value helpers; the JSON and string conversions follow c->ver */
void rules_val_from_json(const rules_ctx *c, json_t *j, rules_val *out);
json_t *rules_val_to_json(const rules_ctx *c, const rules_val *v); /* new reference, NULL for Undefined/NaN */
int rules_to_dec(const rules_val *v, double *d);      /* 0 ok, -1 Undefined */
int rules_to_num(const rules_val *v, rules_val *out); /* Int stays Int, strings -> Dec */
int rules_str_to_dec(const char *p, size_t n, double *d);
/* Standard string conversion; 0 ok (out borrowed or in the arena), -1 Undefined. */
int rules_to_str(rules_ctx *c, const rules_val *v, const char **p, size_t *n);
int rules_to_bool(const rules_val *v, int *b);
int rules_val_equal(const rules_val *a, const rules_val *b); /* 1, 0; the same in every dialect */
/* 1 when `l op r` (op TK_EQ .. TK_GE) is Boolean true, as WHERE reads a comparison. */
int rules_compare_holds(int op, const rules_val *l, const rules_val *r);
void rules_val_str(rules_val *v, const char *p, size_t n);
int rules_fmt_double(double d, char *buf, size_t len);

/* ---- topic index ------------------------------------------------------------------ */
typedef struct rules_trie rules_trie;
rules_trie *rules_trie_new(void);
void rules_trie_free(rules_trie *t);
int rules_trie_add(rules_trie *t, const char *filter, uint32_t id);
/* Calls back every id whose filter matches topic (ids in no particular order, each id
 * once per filter it was added with). Returns count. */
int rules_trie_match(const rules_trie *t, const char *topic, void (*cb)(void *ud, uint32_t id), void *ud);
int rules_topic_filter_valid(const char *filter, char *err, size_t errlen);
int rules_topic_matches(const char *filter, const char *topic);

/* rules_action_kind_name and rules_load_text are public: rules.h */

/* Find the raw offset of the value token at path (keys, or decimal indices for arrays). */
int rules_jpos_find(const char *text, size_t len, const char *const *path, int npath, size_t *raw_off);
/* Map byte index `idx` of the decoded string starting at raw_off (its opening quote) to a
 * raw offset in the file. */
size_t rules_jpos_map(const char *text, size_t len, size_t raw_off, size_t idx);
void rules_jpos_linecol(const char *text, size_t len, size_t off, int *line, int *col);

#endif
