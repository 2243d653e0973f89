/*
 * topic.h — MQTT topic filters for the modules that test a topic against a handful of
 * filters per message (schemas, aggregates): validate a filter once, compile it into its
 * levels, then match topics against the compiled form (one strncmp per literal level, one
 * strchrnul per '+', instead of a byte-at-a-time walk over both strings). The rules engine
 * keeps its own trie (rules/topic_index.c) for many filters at once.
 *
 * Semantics (MQTT 3.1.1/5 4.7): '+' matches exactly one level (possibly empty), '#' as the
 * last level matches the rest including the parent level ("a/#" matches "a"), and a topic
 * that starts with '$' is matched only by a filter whose first level is literal.
 */
#ifndef TG_TOPIC_H
#define TG_TOPIC_H

typedef struct tg_topic_filter tg_topic_filter;

/* 1 when filter is a valid MQTT topic filter (non-empty, '+' and '#' alone in their level,
 * '#' last), else 0. */
int tg_topic_filter_valid(const char *filter);

/* Compile a valid filter. NULL when it is invalid or memory ran out (check validity first
 * to tell them apart). The result owns a copy of the text. */
tg_topic_filter *tg_topic_filter_new(const char *filter);
void tg_topic_filter_free(tg_topic_filter *f);
const char *tg_topic_filter_text(const tg_topic_filter *f);

/* 1 when topic matches the compiled filter, else 0. */
int tg_topic_filter_match(const tg_topic_filter *f, const char *topic);

/* The same test on an uncompiled filter (one-off checks and tests). */
int tg_topic_match(const char *filter, const char *topic);

#endif
