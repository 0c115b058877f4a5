import { parseArgs } from "node:util";
import { exitCodeOf, toMsbError } from "@msb/errors";
import type { Progress } from "@msb/proto";
import { loadConfig } from "./config.js";
import { runOperation } from "./progress.js";
import { createImageService } from "./service.js";

const USAGE = `usage: node apps/image-service/dist/cli.js <command> [options]

  build DIR [--tag NAME:TAG] [--no-cache]   build images/<name> into the local store
  pull REF [--platform OS/ARCH]             pull from a registry
  push REF [TARGET]                         push to a registry (TARGET defaults to REF)
  rootfs REF [--pull] [--platform OS/ARCH]  print the erofs rootfs path (built when missing)
  ls                                        list local images
  inspect REF                               describe a local image
  rm REF                                    remove a local image (and unused blobs)

options: --json (result as JSON on stdout), --quiet (no progress on stderr)
env: MSB_HOME, MSB_CACHE_DIR, MSB_INSECURE_REGISTRIES, MSB_REGISTRY_AUTH (see README)`;

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

/** One stderr line per event worth showing; byte counters at most every 250 ms (pull throttles). */
function printProgress(p: Progress): void {
  const count = p.totalItems > 0 ? `[${p.doneItems}/${p.totalItems}] ` : "";
  const bytes = p.totalBytes > 0 ? ` ${mib(p.doneBytes)}/${mib(p.totalBytes)}` : "";
  const blob = p.digest === "" ? "" : ` ${p.digest.slice(7, 19)}`;
  process.stderr.write(`${p.phase.padEnd(11)} ${count}${p.message}${blob}${bytes}\n`);
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: "boolean", default: false },
      quiet: { type: "boolean", default: false },
      platform: { type: "string", default: "" },
      tag: { type: "string", default: "" },
      "no-cache": { type: "boolean", default: false },
      pull: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const [command, arg1, arg2] = positionals;
  if (values.help || command === undefined) {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined && !values.help ? 2 : 0;
  }
  const need = (value: string | undefined, what: string): string => {
    if (value === undefined || value === "")
      throw Object.assign(new Error(`${command} needs ${what}`), { usage: true });
    return value;
  };
  const service = await createImageService(loadConfig(process.env));
  const onProgress = values.quiet ? undefined : printProgress;
  const started = Date.now();
  let result: unknown;
  let human: string;
  switch (command) {
    case "build": {
      const image = await runOperation(
        service.build({
          definitionDir: need(arg1, "a definition directory"),
          tag: values.tag,
          noCache: values["no-cache"],
        }),
        onProgress,
      );
      result = image;
      human = `${image.reference} ${image.manifestDigest} (${mib(image.compressedSizeBytes)} compressed, ${((Date.now() - started) / 1000).toFixed(1)} s)`;
      break;
    }
    case "pull": {
      const image = await runOperation(
        service.pull(need(arg1, "an image reference"), values.platform),
        onProgress,
      );
      result = image;
      human = `${image.reference} ${image.manifestDigest}`;
      break;
    }
    case "push": {
      const pushed = await runOperation(
        service.push(need(arg1, "an image reference"), arg2 ?? ""),
        onProgress,
      );
      result = pushed;
      human = `${pushed.target} ${pushed.manifestDigest}`;
      break;
    }
    case "rootfs": {
      const rootfs = await runOperation(
        service.prepareRootfs({
          reference: need(arg1, "an image reference"),
          platform: values.platform,
          pullIfMissing: values.pull,
        }),
        onProgress,
      );
      result = rootfs;
      human = rootfs.path;
      break;
    }
    case "ls": {
      const images = await service.list();
      result = images;
      human = images
        .map(
          (i) =>
            `${i.reference.padEnd(50)} ${i.manifestDigest.slice(7, 19)} ${mib(i.compressedSizeBytes).padStart(10)} ${i.platform}`,
        )
        .join("\n");
      break;
    }
    case "inspect": {
      const image = await service.get(need(arg1, "an image reference"));
      result = image;
      human = JSON.stringify(image, null, 2);
      break;
    }
    case "rm": {
      const removed = await service.remove(need(arg1, "an image reference"));
      result = { removedDigests: removed };
      human = `removed ${removed.length} blob(s)`;
      break;
    }
    default:
      process.stderr.write(`unknown command '${command}'\n${USAGE}\n`);
      return 2;
  }
  process.stdout.write(
    values.json ? `${JSON.stringify(result)}\n` : human === "" ? "" : `${human}\n`,
  );
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (
      (err as { usage?: boolean }).usage === true ||
      (err as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION"
    ) {
      process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
      process.exitCode = 2;
      return;
    }
    const e = toMsbError(err);
    if (e.code === "INTERNAL") process.stderr.write(`${String((err as Error).stack ?? err)}\n`);
    if (process.argv.includes("--json"))
      process.stdout.write(`${JSON.stringify({ error: e.toJSON() })}\n`);
    process.stderr.write(`error ${e.code}: ${e.message}\n`);
    process.exitCode = exitCodeOf(e);
  },
);
