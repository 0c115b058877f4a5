import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fileIdentity, templateKey, type TemplateInputs } from "./template-key.js";

const base: TemplateInputs = {
  kernelPath: "/k/vmlinux",
  initramfsPath: "/k/initramfs.cpio",
  kernel: "/k/vmlinux:100:1:7",
  initramfs: "/k/initramfs.cpio:50:1:8",
  rootfs: "/img/abc.erofs:1000:1:9",
  rootfsPath: "/img/abc.erofs",
  imageReference: "docker.io/microsandbox/python:latest",
  memoryMib: 512,
  vcpus: 1,
  network: "public",
  diskQuotaBytes: 1 << 30,
  qemuVersion: "QEMU emulator version 7.2.22",
  accelerator: "tcg",
};

describe("templateKey", () => {
  it("is stable for the same inputs", () => {
    expect(templateKey({ ...base })).toBe(templateKey(base));
    expect(templateKey(base)).toMatch(/^[0-9a-f]{24}$/);
  });

  it("changes with every input a snapshot depends on", () => {
    const variants: Partial<TemplateInputs>[] = [
      { kernel: "/k/vmlinux:101:1:7" },
      { initramfs: "/k/initramfs.cpio:50:2:8" },
      { rootfs: "/img/def.erofs:1000:1:10" },
      { memoryMib: 768 },
      { vcpus: 2 },
      { network: "none" },
      { network: "any" },
      { diskQuotaBytes: 2 << 30 },
      { qemuVersion: "QEMU emulator version 8.0.0" },
      { accelerator: "kvm" },
    ];
    const keys = new Set([
      templateKey(base),
      ...variants.map((v) => templateKey({ ...base, ...v })),
    ]);
    expect(keys.size).toBe(variants.length + 1);
  });

  it("never lets a 'public' VM and an 'any' VM share a template (or its pool)", () => {
    // Same device set, but the QEMU's primary gid (the firewall's policy) is fixed at spawn.
    expect(templateKey({ ...base, network: "any" })).not.toBe(
      templateKey({ ...base, network: "public" }),
    );
  });

  it("ignores the image name: the rootfs identity decides", () => {
    expect(templateKey({ ...base, imageReference: "python-alias" })).toBe(templateKey(base));
  });
});

describe("fileIdentity", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it("differs once a file is rewritten with other content", async () => {
    const dir = await mkdtemp(join(tmpdir(), "msb-key-"));
    dirs.push(dir);
    const file = join(dir, "initramfs.cpio");
    await writeFile(file, "one");
    const before = await fileIdentity(file);
    expect(await fileIdentity(file)).toBe(before);
    await writeFile(`${file}.new`, "two!");
    const { rename } = await import("node:fs/promises");
    await rename(`${file}.new`, file);
    expect(await fileIdentity(file)).not.toBe(before);
  });
});
