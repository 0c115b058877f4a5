// Sums the vitest JSON reports, node:test TAP logs and the Python unittest log in a directory into the one
// closing line CI reads: "tests: N passed, N failed, N skipped". Exits 1 when any test failed
// or when no test ran at all.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

const dir = process.argv[2];
let passed = 0;
let failed = 0;
let skipped = 0;
for (const file of readdirSync(dir)) {
  const text = readFileSync(join(dir, file), "utf8");
  if (file.endsWith(".json")) {
    const report = JSON.parse(text);
    passed += report.numPassedTests;
    failed += report.numFailedTests + (report.numFailedTestSuites ?? 0);
    skipped += report.numPendingTests + report.numTodoTests;
  } else if (file.endsWith(".tap")) {
    const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
    passed += count("pass");
    failed += count("fail") + count("cancelled");
    skipped += count("skipped") + count("todo");
  } else if (file === "python.txt") {
    const ran = /^Ran (\d+) tests?/m.exec(text);
    const bad = /^FAILED \((?:failures=(\d+))?(?:, )?(?:errors=(\d+))?/m.exec(text);
    const skip = /skipped=(\d+)/.exec(text);
    const total = ran ? Number(ran[1]) : 0;
    const nBad = bad ? Number(bad[1] ?? 0) + Number(bad[2] ?? 0) : 0;
    const nSkip = skip ? Number(skip[1]) : 0;
    passed += total - nBad - nSkip;
    failed += nBad;
    skipped += nSkip;
  }
}
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
