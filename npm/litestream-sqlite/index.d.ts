/** A connection whose loadExtension(path) loads synchronously (better-sqlite3, node:sqlite). */
export interface LoadableDatabase {
  loadExtension(path: string): unknown;
}

/** The absolute path of the extension library for this platform (throws if there is none). */
export function getLoadablePath(): string;

/** Load the extension into `db` (better-sqlite3 Database, node:sqlite DatabaseSync). */
export function load(db: LoadableDatabase): void;

declare const litestream: { getLoadablePath: typeof getLoadablePath; load: typeof load };
export default litestream;
