import type { ServiceContext } from "./context.js";
import type { SandboxService } from "./service-types.js";

/** Guest files and interactive sessions of a running sandbox. */
export function createFiles(
  ctx: ServiceContext,
): Pick<SandboxService, "writeFile" | "readFile" | "attach"> {
  const { vmm, requireRunning, guardRun } = ctx;
  return {
    async writeFile(caller, params, signal) {
      const record = requireRunning(caller, params.namespace, params.sandbox);
      const data = Buffer.from(params.data, "base64");
      await guardRun(record, () =>
        vmm.writeFile(
          record.vmId,
          params.path,
          data,
          { mode: params.mode, createParents: params.create_parents },
          signal,
        ),
      );
      return { path: params.path, size: data.length };
    },

    async readFile(caller, params, signal) {
      const record = requireRunning(caller, params.namespace, params.sandbox);
      const file = await guardRun(record, () =>
        vmm.readFile(record.vmId, params.path, params.max_bytes, signal),
      );
      return {
        path: params.path,
        data: Buffer.from(file.data).toString("base64"),
        encoding: "base64",
        size: file.data.length,
        truncated: file.truncated,
      };
    },

    attach(caller, params, signal) {
      const record = requireRunning(caller, params.namespace, params.sandbox);
      const session = vmm.attach(
        {
          vmId: record.vmId,
          command: params.command,
          args: params.args,
          env: params.env,
          workdir: params.workdir,
          pty: params.pty,
        },
        signal,
      );
      return {
        send: (input) => session.send(input),
        events: (async function* () {
          const events = session.events[Symbol.asyncIterator]();
          for (;;) {
            const next = await guardRun(record, () => events.next());
            if (next.done === true) return;
            yield next.value;
          }
        })(),
      };
    },
  };
}
