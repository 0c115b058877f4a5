import { defineConfig } from "vitest/config";

// Tests import workspace libraries from source (the "@msb/source" export condition), so no
// build is needed before `vitest`. Unit tests: no network, no VMs. Integration tests: real
// servers on 127.0.0.1:0, real SQLite, real registry. e2e: built services and real VMs.
const resolve = { conditions: ["@msb/source", "import", "node", "default"] };
const shared = { exclude: ["**/node_modules/**", "**/dist/**"] };

export default defineConfig({
  test: {
    projects: [
      {
        resolve,
        test: {
          ...shared,
          name: "unit",
          include: ["{apps,libs,tools,bench}/**/src/**/*.test.ts"],
          exclude: [...shared.exclude, "**/*.int.test.ts"],
        },
      },
      {
        resolve,
        test: {
          ...shared,
          name: "int",
          include: ["{apps,libs,tools}/**/src/**/*.int.test.ts"],
          testTimeout: 300_000,
          hookTimeout: 600_000,
          poolOptions: { forks: { singleFork: true } },
        },
      },
      {
        resolve,
        test: {
          ...shared,
          name: "e2e",
          include: ["e2e/src/**/*.test.ts"],
          testTimeout: 300_000,
          hookTimeout: 900_000,
          poolOptions: { forks: { singleFork: true } },
        },
      },
      {
        // Only where /dev/kvm runs our guests: e2e/kvm/run.sh runs it on such a host or
        // inside the nested L1 of tools/kvm-runner. Never part of the default e2e run.
        resolve,
        test: {
          ...shared,
          name: "kvm",
          include: ["e2e/kvm/**/*.test.ts"],
          testTimeout: 900_000,
          hookTimeout: 900_000,
          poolOptions: { forks: { singleFork: true } },
        },
      },
    ],
  },
});
