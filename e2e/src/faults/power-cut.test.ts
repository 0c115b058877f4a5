// Power cut: kill -9 of the image-service, or of the whole server with its VMs, at a seeded
// random point of a `sandbox.start` that pulls a fresh image from a local registry, builds its
// rootfs and boots it. After the restart the image store still verifies (every blob hashes to
// its name, every rootfs is a sound erofs, refs.json parses), the database passes
// `PRAGMA integrity_check`, and a retried start succeeds and leaves no temp file or lock.
// MSB_FAULT_SEED replays a schedule; MSB_SOAK=1 runs more iterations.
import { execFile } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { pushRawImage, startRegistry, tarArchive, type TestRegistry } from "@msb/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  SOAK,
  accountFor,
  call,
  dbIntegrity,
  dbSandbox,
  isAlive,
  isCodedError,
  qemuOf,
  seededRandom,
  serverPids,
  sha256File,
  startFaultServer,
  waitRestarted,
  waitUntil,
  type FaultServer,
  type RpcAnswer,
} from "./fault-harness.js";

const run = promisify(execFile);
const SEED = Number(process.env["MSB_FAULT_SEED"] ?? Date.now() % 1_000_000);
const ITERATIONS = SOAK ? 12 : 2;
const NAME = "pc";

let server: FaultServer;
let registry: TestRegistry;

beforeAll(async () => {
  console.log(`[faults] power-cut seed ${SEED} (replay with MSB_FAULT_SEED=${SEED})`);
  registry = await startRegistry();
  // Every iteration builds its rootfs for real, not from the machine-wide cache.
  // The loopback test registry is contacted only because it is listed.
  server = await startFaultServer({ MSB_ROOTFS_CACHE: "0", MSB_REGISTRIES: registry.host });
}, 900_000);

afterAll(async () => {
  await server?.dispose();
  await registry?.stop();
});

/** A fresh image (new digests) with one big blob to download and many files to unpack. */
async function pushFreshImage(rand: () => number, i: number): Promise<string> {
  const bytes = (n: number) => {
    const b = Buffer.alloc(n);
    for (let k = 0; k < n; k += 4) b.writeUInt32LE(Math.floor(rand() * 2 ** 32), k);
    return b;
  };
  const big = tarArchive([{ path: "data/big.bin", content: bytes(4 * 1024 * 1024) }]);
  const many = tarArchive(
    Array.from({ length: 1000 }, (_, k) => ({
      path: `data/many/${k % 50}/f${k}.txt`,
      content: bytes(1024).toString("hex"),
    })),
  );
  const marker = tarArchive([{ path: "etc/msb-faults", content: `iteration ${i}\n` }]);
  const repo = `faults/pc${i}`;
  await pushRawImage(registry.url, repo, "1", {
    layers: [big, many, marker].map((data) => ({
      data,
      mediaType: "application/vnd.oci.image.layer.v1.tar",
    })),
  });
  return `${registry.host}/${repo}:1`;
}

function start(image: string, timeoutMs = 300_000): Promise<RpcAnswer> {
  return call(
    server.url,
    "sandbox.start",
    { sandbox: NAME, config: { image, memory: 128 } },
    timeoutMs,
  );
}

/** Every blob hashes to its name; every rootfs passes fsck.erofs; refs.json parses. */
async function verifyStore(): Promise<{ blobs: number; rootfs: number }> {
  const images = join(server.home, "images");
  const blobsDir = join(images, "blobs", "sha256");
  const blobs = existsSync(blobsDir) ? readdirSync(blobsDir) : [];
  for (const hex of blobs) {
    expect(await sha256File(join(blobsDir, hex)), `blob ${hex}`).toBe(hex);
  }
  const rootfsDir = join(images, "rootfs");
  const rootfs = existsSync(rootfsDir) ? readdirSync(rootfsDir) : [];
  for (const name of rootfs) {
    expect(name).toMatch(/^[0-9a-f]{64}\.erofs$/);
    await run("fsck.erofs", [join(rootfsDir, name)]);
  }
  JSON.parse(readFileSync(join(images, "refs.json"), "utf8"));
  return { blobs: blobs.length, rootfs: rootfs.length };
}

/** Where the start was when the power went: for the test output. */
function phaseOf(image: string): string {
  if (qemuOf(server.home).length > 0) return "booting/booted";
  const tmp = join(server.home, "images", "tmp");
  const work = existsSync(tmp) ? readdirSync(tmp) : [];
  if (work.some((n) => n.startsWith("rootfs-"))) return "building rootfs";
  if (work.some((n) => n.endsWith(".partial"))) return "pulling blobs";
  return `pull/resolve (${image.split("/").pop()})`;
}

describe("power cut during pull, rootfs build and start", () => {
  it("kill -9 at seeded random points: store verifies, DB intact, retried start succeeds, nothing left", async () => {
    const rand = seededRandom(SEED);
    // A clean run first: how long a start of a fresh image takes here, now.
    const t0 = Date.now();
    const first = await start(await pushFreshImage(rand, 0));
    expect(first.error, JSON.stringify(first.error)).toBeUndefined();
    const fullMs = Date.now() - t0;
    console.log(`[faults] clean start of a fresh image (pull + rootfs + boot): ${fullMs} ms`);
    await call(server.url, "sandbox.stop", { sandbox: NAME });

    const outcomes: string[] = [];
    for (let i = 1; i <= ITERATIONS; i += 1) {
      const image = await pushFreshImage(rand, i);
      const target = i % 2 === 1 ? "image-service" : "whole server";
      const delayMs = Math.floor(rand() * fullMs);
      const pending = start(image).catch((err: Error): RpcAnswer => ({
        error: { code: 0, message: `transport: ${err.message}` },
      }));
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      const phase = phaseOf(image);
      const pids = serverPids(server.home);
      if (target === "image-service") {
        const victim = pids.services["image-service"]!;
        process.kill(victim, "SIGKILL");
        await waitRestarted(server, "image-service", victim);
      } else {
        // Everything at once, VMs included: what a power cut does.
        const vms = qemuOf(server.home);
        for (const pid of [pids.supervisor, ...Object.values(pids.services), ...vms]) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // Already gone.
          }
        }
        await server.current.exited;
        await waitUntil(() => vms.every((p) => !isAlive(p)), "the VMs to be gone", 15_000);
      }
      const answer = await pending;
      const how =
        answer.error === undefined
          ? "it had succeeded"
          : `${answer.error.data?.code ?? "no code"}: ${answer.error.message.split("\n")[0]?.slice(0, 160)}`;
      if (target === "image-service" && answer.error !== undefined) {
        // The control plane survived: its answer must be one of ours, never "Unknown error".
        expect(isCodedError(answer), JSON.stringify(answer.error)).toBe(true);
      }
      if (target === "whole server") await server.restart();

      const store = await verifyStore();
      expect(dbIntegrity(server.home)).toBe("ok");
      const retry = await start(image);
      expect(retry.error, JSON.stringify(retry.error)).toBeUndefined();
      expect(dbSandbox(server.home, NAME)?.state).toBe("running");
      const inv = accountFor(server.home);
      const after = await verifyStore();
      const line = `iteration ${i}: kill -9 ${target} after ${delayMs} ms (${phase}); the start call: ${how}; store after restart: ${store.blobs} blobs, ${store.rootfs} rootfs verified; retry ok; after retry ${after.blobs} blobs, ${after.rootfs} rootfs, ${inv.qemu.length} VM, no temp files or locks`;
      console.log(`[faults] ${line}`);
      outcomes.push(line);
      await call(server.url, "sandbox.stop", { sandbox: NAME });
    }
    expect(outcomes).toHaveLength(ITERATIONS);
  }, 3_600_000);
});
