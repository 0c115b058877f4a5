// ESLint rule `msb/no-import-cycle`: no two files of the tree may import each other, directly or
// through others, counting `import type` too. import-x/no-cycle (also on) skips type-only imports,
// but a type-level cycle still ties two modules together (neither can move or be replaced alone:
// hypervisor.ts ↔ qemu/command-line.ts made the Hypervisor seam one in name only).
//
// The import graph is built once per TypeScript program (the one typed linting already holds):
// every import/export-from of every source file in the repository, resolved with the program's
// own options (so `@msb/x` reaches libs/x/src through the "@msb/source" condition). Its strongly
// connected components are the cycles; each import edge inside one is reported with the loop.
import path from "node:path";
import ts from "typescript";

const graphs = new WeakMap();

/** Module specifiers of one file: static imports and re-exports, type-only ones included. */
function specifiers(sourceFile) {
  const out = [];
  for (const statement of sourceFile.statements) {
    if (
      (ts.isImportDeclaration(statement) || ts.isExportDeclaration(statement)) &&
      statement.moduleSpecifier &&
      ts.isStringLiteral(statement.moduleSpecifier)
    ) {
      out.push(statement.moduleSpecifier.text);
    }
  }
  return out;
}

function buildGraph(program) {
  const options = program.getCompilerOptions();
  const cache = ts.createModuleResolutionCache(process.cwd(), (f) => f, options);
  const inTree = (file) =>
    !file.includes(`${path.sep}node_modules${path.sep}`) && !file.endsWith(".d.ts");
  const resolve = (spec, from) => {
    const hit = ts.resolveModuleName(spec, from, options, ts.sys, cache).resolvedModule;
    if (!hit) return undefined;
    const file = path.resolve(
      ts.sys.realpath ? ts.sys.realpath(hit.resolvedFileName) : hit.resolvedFileName,
    );
    return inTree(file) ? file : undefined;
  };
  const edges = new Map();
  for (const sourceFile of program.getSourceFiles()) {
    const from = path.resolve(sourceFile.fileName);
    if (!inTree(from)) continue;
    const targets = new Set();
    for (const spec of specifiers(sourceFile)) {
      const to = resolve(spec, from);
      if (to && to !== from) targets.add(to);
    }
    edges.set(from, targets);
  }
  return { edges, resolve, component: components(edges) };
}

/** Tarjan's strongly connected components; maps each file in a cycle to its component. */
function components(edges) {
  const index = new Map();
  const low = new Map();
  const stack = [];
  const onStack = new Set();
  const component = new Map();
  let next = 0;
  const visit = (v) => {
    index.set(v, next);
    low.set(v, next);
    next += 1;
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v), index.get(w)));
      }
    }
    if (low.get(v) === index.get(v)) {
      const members = new Set();
      let w;
      do {
        w = stack.pop();
        onStack.delete(w);
        members.add(w);
      } while (w !== v);
      if (members.size > 1) for (const m of members) component.set(m, members);
    }
  };
  for (const v of edges.keys()) if (!index.has(v)) visit(v);
  return component;
}

/** The shortest way back from `start` to `goal` inside one component, as relative paths. */
function loop(graph, start, goal) {
  const members = graph.component.get(goal);
  const previous = new Map([[start, undefined]]);
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift();
    if (v === goal) break;
    for (const w of graph.edges.get(v) ?? []) {
      if (members.has(w) && !previous.has(w)) {
        previous.set(w, v);
        queue.push(w);
      }
    }
  }
  const route = [];
  for (let v = goal; v !== undefined; v = previous.get(v))
    route.unshift(path.relative(process.cwd(), v));
  return route;
}

export const noImportCycle = {
  meta: {
    type: "problem",
    docs: { description: "Forbid import cycles between files, type-only imports included." },
    messages: {
      cycle:
        "Import cycle (type-only imports count): {{route}}. Move the shared types to a third module.",
    },
    schema: [],
  },
  create(context) {
    const program = context.sourceCode.parserServices?.program;
    if (!program) return {};
    let graph = graphs.get(program);
    if (!graph) {
      graph = buildGraph(program);
      graphs.set(program, graph);
    }
    const self = path.resolve(context.physicalFilename);
    if (!graph.component.has(self)) return {};
    const check = (node) => {
      if (!node.source || typeof node.source.value !== "string") return;
      const target = graph.resolve(node.source.value, self);
      if (!target || graph.component.get(target) !== graph.component.get(self)) return;
      context.report({
        node,
        messageId: "cycle",
        data: {
          route: [path.relative(process.cwd(), self), ...loop(graph, target, self)].join(" → "),
        },
      });
    };
    return { ImportDeclaration: check, ExportNamedDeclaration: check, ExportAllDeclaration: check };
  },
};

export default { rules: { "no-import-cycle": noImportCycle } };
