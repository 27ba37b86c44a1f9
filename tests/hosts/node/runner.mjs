// SQL runner for Node hosts (the protocol: tests/hosts/README.md).
//
//   node runner.mjs better-sqlite3|sqlite3 DB < steps.json > results.json
//
// Runs from a folder where the litestream-sqlite tarballs were installed, so the package is
// resolved as a user's project resolves it. better-sqlite3 loads the extension through the
// package's load(db); the callback-style sqlite3 package through db.loadExtension(
// getLoadablePath(), callback), as the package's README tells its users.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { getLoadablePath, load } from "litestream-sqlite";

const require = createRequire(import.meta.url);
const [driver, dbPath] = process.argv.slice(2);
const steps = JSON.parse(readFileSync(0, "utf8"));

// Each host as { run(sql) -> Promise<first column of the first row, or null>, close() }.
async function openBetterSqlite3() {
  const Database = require("better-sqlite3");
  const db = new Database(dbPath);
  load(db);
  return {
    async run(sql) {
      const stmt = db.prepare(sql);
      if (!stmt.reader) {
        stmt.run();
        return null;
      }
      const value = stmt.pluck().get();
      return value === undefined ? null : value;
    },
    async close() {
      db.close();
    },
  };
}

async function openSqlite3() {
  const sqlite3 = require("sqlite3");
  const db = await new Promise((resolve, reject) => {
    const d = new sqlite3.Database(dbPath, (err) => (err ? reject(err) : resolve(d)));
  });
  await new Promise((resolve, reject) =>
    db.loadExtension(getLoadablePath(), (err) => (err ? reject(err) : resolve())),
  );
  return {
    run(sql) {
      return new Promise((resolve, reject) =>
        db.get(sql, (err, row) => {
          if (err) return reject(err);
          resolve(row === undefined ? null : Object.values(row)[0]);
        }),
      );
    },
    close() {
      return new Promise((resolve, reject) => db.close((err) => (err ? reject(err) : resolve())));
    },
  };
}

const hosts = { "better-sqlite3": openBetterSqlite3, sqlite3: openSqlite3 };
if (!hosts[driver]) {
  console.error(`runner.mjs: unknown driver '${driver}'; accepted: ${Object.keys(hosts).join(", ")}`);
  process.exit(2);
}
const host = await hosts[driver]();
const results = [];
for (const sql of steps) {
  try {
    const value = await host.run(sql);
    results.push({ value: value === null ? null : String(value) });
  } catch (err) {
    results.push({ error: String(err.message) });
  }
}
await host.close();
process.stdout.write(JSON.stringify(results));
