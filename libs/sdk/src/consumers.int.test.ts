import { execFile } from "node:child_process";
import { createServer } from "node:net";
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeRpcServer, type FakeRpcServer } from "./test-support/fake-rpc-server.js";

const run = promisify(execFile);
const sdkRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repoRoot = resolve(sdkRoot, "../..");
const tsc = join(repoRoot, "node_modules", "typescript", "bin", "tsc");

// What a user's project looks like after `npm install microsandbox`: the built package under
// node_modules, imported by name from ESM, CommonJS and TypeScript (nodenext) code.
let dir: string;
let server: FakeRpcServer;
let env: NodeJS.ProcessEnv;

async function closedPortUrl(): Promise<string> {
  const s = createServer();
  await new Promise<void>((ok) => s.listen(0, "127.0.0.1", ok));
  const address = s.address();
  await new Promise((ok) => s.close(ok));
  return `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`;
}

beforeAll(async () => {
  await run(process.execPath, [tsc, "-b", "tsconfig.json", "tsconfig.cjs.json"], { cwd: sdkRoot });
  dir = mkdtempSync(join(tmpdir(), "msb-sdk-consumer-"));
  mkdirSync(join(dir, "node_modules"));
  symlinkSync(sdkRoot, join(dir, "node_modules", "microsandbox"), "dir");
  server = await startFakeRpcServer((rec) =>
    rec.method === "sandbox.repl.run"
      ? {
          result: {
            status: "success",
            language: "javascript",
            output: [{ stream: "stdout", text: `ran: ${String(rec.params["code"])}\n` }],
          },
        }
      : undefined,
  );
  env = { ...process.env, URL: server.url, REFUSED: await closedPortUrl() };
}, 120_000);

afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const script = (load: string) => `${load}
async function main() {
  const sb = await NodeSandbox.create({ name: "consumer", serverUrl: process.env.URL });
  try {
    const exec = await sb.run("1 + 1");
    console.log(await exec.output());
  } finally {
    await sb.stop();
  }
  const err = await NodeSandbox.create({ serverUrl: process.env.REFUSED }).catch((e) => e);
  console.log(err instanceof MicrosandboxError, err.code);
}
main().catch((e) => { console.error(e); process.exit(1); });
`;

describe("package consumers", () => {
  it("import works from ESM", async () => {
    const file = join(dir, "esm.mjs");
    writeFileSync(file, script('import { NodeSandbox, MicrosandboxError } from "microsandbox";'));
    const { stdout } = await run(process.execPath, [file], { env });
    expect(stdout).toBe("ran: 1 + 1\ntrue SERVER_NOT_RUNNING\n");
  });

  it("require works from CommonJS", async () => {
    const file = join(dir, "cjs.cjs");
    writeFileSync(
      file,
      script('const { NodeSandbox, MicrosandboxError } = require("microsandbox");'),
    );
    const { stdout } = await run(process.execPath, [file], { env });
    expect(stdout).toBe("ran: 1 + 1\ntrue SERVER_NOT_RUNNING\n");
  });

  it("type-checks from TypeScript ESM and CommonJS files", async () => {
    const body = `
export async function main(): Promise<string> {
  const sb = await NodeSandbox.create({ name: "typed", memory: 256 });
  const exec = await sb.run("1", { timeout: 5 });
  const out: string = await exec.output();
  const res = await sb.command.run("ls", ["-la"], 10);
  const code: number = res.exitCode;
  await sb.stop();
  return out + String(code);
}
`;
    writeFileSync(join(dir, "typed.mts"), `import { NodeSandbox } from "microsandbox";\n${body}`);
    writeFileSync(join(dir, "typed.cts"), `import { NodeSandbox } from "microsandbox";\n${body}`);
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          module: "nodenext",
          moduleResolution: "nodenext",
          target: "es2022",
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          typeRoots: [join(repoRoot, "node_modules", "@types")],
          types: ["node"],
        },
        files: ["typed.mts", "typed.cts"],
      }),
    );
    await expect(run(process.execPath, [tsc, "-p", dir])).resolves.toBeDefined();
  });
});
