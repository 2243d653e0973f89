// lake_query.mjs — read a tidegate lake folder with DuckDB (@duckdb/node-api, pinned in
// tests/package-lock.json), not with tidegate's own code: every telemetry record's thing,
// seq and msg_id as one JSON array on stdout. Hive-style: hidden in-progress files are
// skipped, as Athena or DuckDB skip them on a real lake (after a clean stop there are none).
//   node tests/chaos/lake_query.mjs LAKE_DIR
import { DuckDBInstance } from '@duckdb/node-api';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: lake_query.mjs LAKE_DIR');
  process.exit(2);
}
const inst = await DuckDBInstance.create(':memory:');
const con = await inst.connect();
const glob = `${dir.replace(/'/g, "''")}/telemetry/**/*.json*`;
const sql = `SELECT thing, seq, msg_id FROM read_json('${glob}', format = 'newline_delimited',
  columns = {thing: 'VARCHAR', seq: 'UBIGINT', msg_id: 'VARCHAR'}, hive_partitioning = false)`;
const reader = await con.runAndReadAll(sql);
const rows = reader.getRowObjectsJson();
process.stdout.write(JSON.stringify(rows));
