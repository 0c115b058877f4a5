import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { MsbError, isErrorCode, type ErrorCode } from "@msb/errors";
import type { SandboxConfig } from "./sandbox-config.js";
import { transition, type SandboxEvent, type SandboxState } from "./state.js";

/** One sandbox as the database holds it. Times are ms since the epoch. */
export interface SandboxRecord {
  readonly namespace: string;
  readonly name: string;
  readonly state: SandboxState;
  /** Why it is failed or stopped; null while live. */
  readonly reason: string | null;
  readonly errorCode: ErrorCode | null;
  readonly config: SandboxConfig;
  readonly configHash: string;
  readonly vmId: string;
  readonly createdAt: number;
  readonly updatedAt: number;
  /** When it last became running. */
  readonly startedAt: number | null;
}

export interface SandboxStore {
  get(namespace: string, name: string): SandboxRecord | undefined;
  /** Sandboxes of one namespace, or of all when `namespace` is undefined; ordered by name. */
  list(namespace?: string): SandboxRecord[];
  /**
   * Applies one state-machine event in a transaction (read state, check the transition,
   * write). `start` also records the configuration the sandbox is started with.
   */
  apply(
    namespace: string,
    name: string,
    event: SandboxEvent,
    start?: { readonly config: SandboxConfig; readonly configHash: string; readonly vmId: string },
  ): SandboxRecord;
  /**
   * Deletes the record, in a transaction, only while it is in one of `states` (the caller
   * checked the state under the sandbox's lock; this keeps a row that changed meanwhile).
   * Returns false when there was no such row.
   */
  remove(namespace: string, name: string, states: readonly SandboxState[]): boolean;
  close(): void;
}

interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/** Append-only: never edit a shipped migration, add the next one. */
const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "sandboxes",
    sql: `
      CREATE TABLE sandboxes (
        namespace   TEXT    NOT NULL,
        name        TEXT    NOT NULL,
        state       TEXT    NOT NULL
                    CHECK (state IN ('starting', 'running', 'stopping', 'stopped', 'failed')),
        reason      TEXT,
        error_code  TEXT,
        config      TEXT    NOT NULL,
        config_hash TEXT    NOT NULL,
        vm_id       TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        started_at  INTEGER,
        PRIMARY KEY (namespace, name)
      ) STRICT;
      CREATE INDEX sandboxes_state ON sandboxes (state);
    `,
  },
];

interface Row {
  namespace: string;
  name: string;
  state: string;
  reason: string | null;
  error_code: string | null;
  config: string;
  config_hash: string;
  vm_id: string;
  created_at: number;
  updated_at: number;
  started_at: number | null;
}

export interface OpenSandboxStoreOptions {
  /** Clock in ms since the epoch. */
  readonly now?: () => number;
}

/**
 * Opens (creating and migrating) the sandbox database, `$MSB_HOME/msb.db`.
 *
 * WAL lets readers (metrics, status) run while a start writes. `synchronous=FULL` rather than
 * NORMAL: in WAL mode NORMAL may lose the last commits on power loss, and a lost `running`
 * or `stopped` row means a VM the control plane forgot or a sandbox it thinks is gone.
 * Writes are rare (a few per start/stop), so the extra fsync costs nothing measurable.
 */
export function openSandboxStore(
  path: string,
  options: OpenSandboxStoreOptions = {},
): SandboxStore {
  const now = options.now ?? Date.now;
  if (path !== ":memory:") {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // Every tenant's config and env is in here: the owner's alone. SQLite creates the WAL
    // and shm files with the database's mode; an older database is tightened as well.
    closeSync(openSync(path, "a", 0o600));
    for (const file of [path, `${path}-wal`, `${path}-shm`]) {
      if (existsSync(file)) chmodSync(file, 0o600);
    }
  }
  const db = new Database(path);
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma("busy_timeout = 5000");
    db.pragma("foreign_keys = ON");
    migrate(db, now);
  } catch (err) {
    db.close();
    throw err;
  }

  const getStmt = db.prepare<[string, string], Row>(
    "SELECT * FROM sandboxes WHERE namespace = ? AND name = ?",
  );
  const listAll = db.prepare<[], Row>("SELECT * FROM sandboxes ORDER BY namespace, name");
  const listNs = db.prepare<[string], Row>(
    "SELECT * FROM sandboxes WHERE namespace = ? ORDER BY name",
  );
  const insert = db.prepare(
    `INSERT INTO sandboxes (namespace, name, state, reason, error_code, config, config_hash, vm_id, created_at, updated_at, started_at)
     VALUES (@namespace, @name, @state, @reason, @error_code, @config, @config_hash, @vm_id, @now, @now, NULL)`,
  );
  const update = db.prepare(
    `UPDATE sandboxes SET state = @state, reason = @reason, error_code = @error_code,
       config = COALESCE(@config, config), config_hash = COALESCE(@config_hash, config_hash),
       vm_id = COALESCE(@vm_id, vm_id), updated_at = @now,
       started_at = CASE WHEN @state = 'running' THEN @now ELSE started_at END
     WHERE namespace = @namespace AND name = @name`,
  );

  const deleteStmt = db.prepare<[string, string]>(
    "DELETE FROM sandboxes WHERE namespace = ? AND name = ?",
  );
  const removeTx = db.transaction(
    (namespace: string, name: string, states: readonly SandboxState[]): boolean => {
      const current = getStmt.get(namespace, name);
      if (current === undefined || !states.includes(toRecord(current).state)) return false;
      return deleteStmt.run(namespace, name).changes === 1;
    },
  );

  const applyTx = db.transaction(
    (
      namespace: string,
      name: string,
      event: SandboxEvent,
      start?: { config: SandboxConfig; configHash: string; vmId: string },
    ): SandboxRecord => {
      const current = getStmt.get(namespace, name);
      const from = current === undefined ? "new" : toRecord(current).state;
      const after = transition(from, event);
      const values = {
        namespace,
        name,
        state: after.state,
        reason: after.reason,
        error_code: after.errorCode,
        config: start === undefined ? null : JSON.stringify(start.config),
        config_hash: start?.configHash ?? null,
        vm_id: start?.vmId ?? null,
        now: now(),
      };
      if (current === undefined) {
        if (start === undefined) throw new Error("a new sandbox needs its configuration");
        insert.run(values);
      } else {
        update.run(values);
      }
      return toRecord(getStmt.get(namespace, name)!);
    },
  );

  return {
    get(namespace, name) {
      const row = getStmt.get(namespace, name);
      return row === undefined ? undefined : toRecord(row);
    },
    list(namespace) {
      const rows = namespace === undefined ? listAll.all() : listNs.all(namespace);
      return rows.map(toRecord);
    },
    apply(namespace, name, event, start) {
      return applyTx(namespace, name, event, start);
    },
    remove(namespace, name, states) {
      return removeTx(namespace, name, states);
    },
    close() {
      db.close();
    },
  };
}

function migrate(db: Database.Database, now: () => number): void {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`);
  const row = db
    .prepare<[], { v: number | null }>("SELECT MAX(version) AS v FROM schema_migrations")
    .get();
  const current = row?.v ?? 0;
  const latest = MIGRATIONS[MIGRATIONS.length - 1]!.version;
  if (current > latest) {
    throw new MsbError(
      "CONFIG_INVALID",
      `The database ${db.name} has schema version ${current}, newer than this msb understands (${latest}). Run a newer msb, or point MSB_HOME elsewhere.`,
      { details: { path: db.name, version: current } },
    );
  }
  const record = db.prepare(
    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
  );
  for (const m of MIGRATIONS) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      record.run(m.version, m.name, now());
    })();
  }
}

function toRecord(row: Row): SandboxRecord {
  return {
    namespace: row.namespace,
    name: row.name,
    state: row.state as SandboxState,
    reason: row.reason,
    errorCode: isErrorCode(row.error_code) ? row.error_code : null,
    config: JSON.parse(row.config) as SandboxConfig,
    configHash: row.config_hash,
    vmId: row.vm_id,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    startedAt: row.started_at,
  };
}
