import { Command } from "commander";
import { printJson, type CliDeps } from "../../cli/context.js";
import { formatTable } from "../../cli/table.js";
import type { Project } from "../../project/sandboxfile.js";
import { projectContext, withFileOption } from "./shared.js";

export function renderList(project: Project): string {
  if (project.sandboxes.length === 0) {
    return `no sandboxes in ${project.file}; add one with \`msb add NAME --image IMAGE\`\n`;
  }
  const table = formatTable(
    ["name", "image", "memory", "cpus", "ports", "depends on", "scripts"],
    project.sandboxes.map((s) => [
      s.name,
      s.image,
      s.memory === undefined ? "-" : `${s.memory} MiB`,
      s.cpus === undefined ? "-" : String(s.cpus),
      s.ports.join(",") || "-",
      s.dependsOn.join(",") || "-",
      Object.keys(s.scripts).join(",") || "-",
    ]),
  );
  return `${table}\n`;
}

export function listCommand(deps: CliDeps): Command {
  return withFileOption(
    new Command("list").alias("ls").description("list the sandboxes of the Sandboxfile"),
  )
    .addHelpText(
      "after",
      `
Examples:
  msb list
  msb list --json | jq '.sandboxes[].name'

Exit codes: 0 · 2 invalid Sandboxfile · 4 no Sandboxfile.`,
    )
    .action((options: { file?: string }, cmd: Command) => {
      const { global, project } = projectContext(cmd, options, deps);
      if (global.json) printJson(deps.io, { file: project.file, sandboxes: project.sandboxes });
      else deps.io.out(renderList(project));
    });
}
