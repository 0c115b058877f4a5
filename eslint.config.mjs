import js from "@eslint/js";
import nx from "@nx/eslint-plugin";
import { createTypeScriptImportResolver } from "eslint-import-resolver-typescript";
import importX from "eslint-plugin-import-x";
import tseslint from "typescript-eslint";
import msb from "./tools/lint/no-import-cycle.mjs";

export default tseslint.config(
  {
    ignores: [
      "**/dist/**",
      "**/node_modules/**",
      "libs/proto/src/gen/**",
      "images/agent/**",
      "libs/sdk-python/**",
      "**/*.js",
      "**/*.mjs",
      "**/*.cjs",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        project: ["./tsconfig.lint.json"],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    plugins: { "@nx": nx, "import-x": importX, msb },
    settings: {
      "import-x/extensions": importX.flatConfigs.typescript.settings["import-x/extensions"],
      "import-x/parsers": importX.flatConfigs.typescript.settings["import-x/parsers"],
      "import-x/resolver-next": [
        createTypeScriptImportResolver({
          project: "./tsconfig.lint.json",
          conditionNames: ["@msb/source", "types", "import", "default"],
        }),
      ],
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/switch-exhaustiveness-check": "error",
      "@typescript-eslint/consistent-type-imports": "error",
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_" },
      ],
      // Runtime cycles (import-x skips `import type`); msb/no-import-cycle adds the type-level ones.
      "import-x/no-cycle": "error",
      "msb/no-import-cycle": "error",
      "no-restricted-syntax": [
        "error",
        {
          selector: "ExportAllDeclaration",
          message: "Export by name: libraries list their public names (STYLE.md).",
        },
      ],
      "@nx/enforce-module-boundaries": [
        "error",
        {
          allow: [],
          depConstraints: [
            { sourceTag: "type:app", onlyDependOnLibsWithTags: ["type:lib", "type:proto"] },
            { sourceTag: "type:cli", onlyDependOnLibsWithTags: ["type:lib"] },
            { sourceTag: "type:lib", onlyDependOnLibsWithTags: ["type:lib", "type:proto"] },
            { sourceTag: "type:proto", onlyDependOnLibsWithTags: ["type:lib"] },
            { sourceTag: "type:e2e", onlyDependOnLibsWithTags: ["type:lib", "type:proto"] },
            { sourceTag: "scope:cli", notDependOnLibsWithTags: ["type:proto"] },
            // Scopes: a project reaches its own scope and shared code only. A project whose tags
            // match no constraint may depend on nothing, so every project must carry both tags.
            { sourceTag: "scope:shared", onlyDependOnLibsWithTags: ["scope:shared"] },
            {
              sourceTag: "scope:control-plane",
              onlyDependOnLibsWithTags: ["scope:control-plane", "scope:shared"],
            },
            { sourceTag: "scope:vmm", onlyDependOnLibsWithTags: ["scope:vmm", "scope:shared"] },
            { sourceTag: "scope:image", onlyDependOnLibsWithTags: ["scope:image", "scope:shared"] },
            { sourceTag: "scope:cli", onlyDependOnLibsWithTags: ["scope:cli", "scope:shared"] },
          ],
        },
      ],
    },
  },
  {
    files: ["**/*.test.ts"],
    rules: {
      "@typescript-eslint/no-non-null-assertion": "off",
      "@typescript-eslint/unbound-method": "off",
    },
  },
);
