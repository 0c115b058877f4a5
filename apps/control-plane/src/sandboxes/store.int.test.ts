import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { openSandboxStore } from "./store.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "msb-store-int-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

// Issue 12, item 4: every tenant's config and env is in msb.db; no other uid may read it.
it("keeps msb.db and its WAL readable by their owner alone", async () => {
  const path = join(dir, "msb.db");
  const store = openSandboxStore(path);
  try {
    for (const file of [path, `${path}-wal`]) {
      expect({ file, mode: (await stat(file)).mode & 0o777 }).toEqual({ file, mode: 0o600 });
    }
  } finally {
    store.close();
  }
});
