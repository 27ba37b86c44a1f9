// litestream-sqlite: where the compiled extension is, and how to load it into a connection.
//
// The library itself ships in a platform package (an optional dependency, installed only where
// its os/cpu/libc match, as sqlite-vec does); this package finds it. Every failure names what
// was looked for and what to do.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

// `${process.platform}-${process.arch}` -> the package that carries the library built for it.
const PLATFORM_PACKAGES = { "linux-x64": "litestream-sqlite-linux-x64" };
const LIBRARY_FILE = "liblitestream.so";

/** The absolute path of the extension library for this platform. */
function getLoadablePath() {
  const platform = `${process.platform}-${process.arch}`;
  const pkg = PLATFORM_PACKAGES[platform];
  if (!pkg) {
    throw new Error(
      `litestream-sqlite: no build for ${platform}; builds exist for: ` +
        Object.keys(PLATFORM_PACKAGES).join(", "),
    );
  }
  let dir;
  try {
    dir = path.dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    throw new Error(
      `litestream-sqlite: the package ${pkg} with the ${platform} library is not installed ` +
        `(npm leaves out optional dependencies with --omit=optional); run: npm install ${pkg}`,
    );
  }
  const file = path.join(dir, LIBRARY_FILE);
  if (!fs.existsSync(file)) {
    throw new Error(`litestream-sqlite: ${pkg} is installed but has no ${file}`);
  }
  return file;
}

/**
 * Load the extension into a connection whose loadExtension(path) is synchronous
 * (better-sqlite3's Database, node:sqlite's DatabaseSync opened with allowExtension: true).
 * For the callback-based `sqlite3` package call db.loadExtension(getLoadablePath(), callback).
 */
function load(db) {
  if (!db || typeof db.loadExtension !== "function") {
    throw new TypeError(
      "litestream-sqlite: load(db) needs a connection with a loadExtension(path) method " +
        "(better-sqlite3 Database, node:sqlite DatabaseSync); got " + typeof db,
    );
  }
  db.loadExtension(getLoadablePath());
}

module.exports = { getLoadablePath, load };
