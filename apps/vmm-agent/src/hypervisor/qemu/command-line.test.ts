import { describe, expect, it } from "vitest";
import { buildQemuArgs, escapeOptionValue, type QemuCommandSpec } from "./command-line.js";

const base: QemuCommandSpec = {
  accelerator: "tcg",
  tcgTbSizeMib: 64,
  memoryMib: 512,
  vcpus: 2,
  kernelPath: "/k/vmlinux",
  initramfsPath: "/k/initramfs.cpio",
  rootfsPath: "/img/python.erofs",
  scratchDiskPath: "/vm/scratch.ext4",
  agentSocketPath: "/vm/agent.sock",
  qmpSocketPath: "/vm/qmp.sock",
  network: { portForwards: [] },
  volumes: [],
  seccomp: true,
};

/** The value following each occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1] ?? ""] : []));
}

describe("buildQemuArgs", () => {
  it("boots a microvm with the kernel, initramfs, RTC and no default devices", () => {
    const args = buildQemuArgs(base);
    expect(values(args, "-M")).toEqual(["microvm,rtc=on,acpi=off"]);
    expect(args).toEqual(
      expect.arrayContaining(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]),
    );
    expect(values(args, "-kernel")).toEqual(["/k/vmlinux"]);
    expect(values(args, "-initrd")).toEqual(["/k/initramfs.cpio"]);
    expect(values(args, "-append")[0]).toContain("console=ttyS0");
    expect(values(args, "-serial")).toEqual(["stdio"]);
    expect(values(args, "-qmp")).toEqual(["unix:/vm/qmp.sock,server=on,wait=off"]);
    expect(values(args, "-device")).toContain("virtio-rng-device,bus=virtio-mmio-bus.4");
  });

  it("asks for the memory size and vCPU count the guest must see", () => {
    const args = buildQemuArgs({ ...base, memoryMib: 768, vcpus: 3 });
    expect(values(args, "-m")).toEqual(["768"]);
    expect(values(args, "-smp")).toEqual(["3"]);
  });

  it("uses TCG with cpu max and a small translation cache, or KVM with the host CPU", () => {
    const tcg = buildQemuArgs(base);
    expect(values(tcg, "-accel")).toEqual(["tcg,tb-size=64"]);
    expect(values(tcg, "-cpu")).toEqual(["max"]);
    const kvm = buildQemuArgs({ ...base, accelerator: "kvm" });
    expect(values(kvm, "-accel")).toEqual(["kvm"]);
    expect(values(kvm, "-cpu")).toEqual(["host"]);
  });

  it("attaches the image read-only before the scratch disk, so they are vda and vdb", () => {
    const args = buildQemuArgs(base);
    const drives = values(args, "-drive");
    expect(drives[0]).toBe("id=rootfs,file=/img/python.erofs,format=raw,if=none,readonly=on");
    expect(drives[1]).toMatch(/^id=scratch,file=\/vm\/scratch\.ext4,format=raw,if=none/);
    expect(drives[1]).not.toContain("readonly");
    // The kernel probes transports from the highest bus down: rootfs first, so it is vda.
    const blk = values(args, "-device").filter((d) => d.startsWith("virtio-blk-device"));
    expect(blk).toEqual([
      "virtio-blk-device,drive=rootfs,bus=virtio-mmio-bus.6",
      "virtio-blk-device,drive=scratch,bus=virtio-mmio-bus.5",
    ]);
  });

  it("connects the agent port to the host's socket as a client", () => {
    const args = buildQemuArgs(base);
    expect(values(args, "-chardev")).toEqual(["socket,id=agent,path=/vm/agent.sock"]);
    expect(values(args, "-device")).toEqual(
      expect.arrayContaining([
        "virtio-serial-device,bus=virtio-mmio-bus.7",
        "virtserialport,chardev=agent,name=msb.agent",
      ]),
    );
  });

  it("forwards ports through user-mode networking", () => {
    const args = buildQemuArgs({
      ...base,
      network: {
        portForwards: [
          { protocol: "tcp", hostAddress: "127.0.0.1", hostPort: 8080, guestPort: 80 },
          { protocol: "udp", hostAddress: "0.0.0.0", hostPort: 5353, guestPort: 53 },
        ],
      },
    });
    expect(values(args, "-netdev")).toEqual([
      "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:0.0.0.0:5353-:53",
    ]);
    expect(values(args, "-device")).toContain(
      "virtio-net-device,netdev=net0,bus=virtio-mmio-bus.2",
    );
  });

  it("has no network interface at all when the network is none", () => {
    const args = buildQemuArgs({ ...base, network: undefined });
    expect(args).not.toContain("-netdev");
    expect(args.some((a) => a.includes("virtio-net"))).toBe(false);
  });

  it("shares volumes over 9p by tag, read-only when asked", () => {
    const args = buildQemuArgs({
      ...base,
      volumes: [
        { tag: "msbvol0", hostPath: "/home/u/data", readOnly: false },
        { tag: "msbvol1", hostPath: "/home/u/ro", readOnly: true },
      ],
    });
    expect(values(args, "-fsdev")).toEqual([
      "local,id=fs0,path=/home/u/data,security_model=mapped-xattr,multidevs=remap",
      "local,id=fs1,path=/home/u/ro,security_model=mapped-xattr,multidevs=remap,readonly=on",
    ]);
    expect(values(args, "-device")).toEqual(
      expect.arrayContaining([
        "virtio-9p-device,fsdev=fs0,mount_tag=msbvol0,bus=virtio-mmio-bus.1",
        "virtio-9p-device,fsdev=fs1,mount_tag=msbvol1,bus=virtio-mmio-bus.0",
      ]),
    );
  });

  it("never puts a device on the RTC's IRQ (bus 3) and gives a spare slot to the balloon", () => {
    const buses = (args: string[]): string[] =>
      values(args, "-device").flatMap((d) => /bus=virtio-mmio-bus\.(\d)/.exec(d)?.[1] ?? []);
    const full = buildQemuArgs({
      ...base,
      network: undefined,
      volumes: [0, 1, 2].map((i) => ({ tag: `v${i}`, hostPath: `/v${i}`, readOnly: false })),
    });
    expect(buses(full).sort()).toEqual(["0", "1", "2", "4", "5", "6", "7"]);
    expect(values(full, "-device").some((d) => d.startsWith("virtio-balloon"))).toBe(false);
    const roomy = buildQemuArgs(base);
    expect(buses(roomy)).not.toContain("3");
    expect(values(roomy, "-device")).toContain(
      "virtio-balloon-device,free-page-reporting=on,bus=virtio-mmio-bus.1",
    );
  });

  it("refuses more volumes than there are device slots", () => {
    const volumes = [0, 1, 2].map((i) => ({ tag: `v${i}`, hostPath: `/v${i}`, readOnly: false }));
    expect(() => buildQemuArgs({ ...base, volumes })).toThrow(/At most 2 volumes/);
    expect(() => buildQemuArgs({ ...base, network: undefined, volumes })).not.toThrow();
  });

  it("escapes commas in paths so a path cannot inject QEMU options", () => {
    expect(escapeOptionValue("/a,b")).toBe("/a,,b");
    const args = buildQemuArgs({
      ...base,
      volumes: [{ tag: "v", hostPath: "/x,readonly=off", readOnly: true }],
    });
    expect(values(args, "-fsdev")[0]).toContain("path=/x,,readonly=off,");
  });

  it("boots without disks for the accelerator probe", () => {
    const args = buildQemuArgs({
      ...base,
      rootfsPath: undefined,
      scratchDiskPath: undefined,
      network: undefined,
    });
    expect(args).not.toContain("-drive");
  });

  it("rejects bad ports, addresses, tags and sizes", () => {
    const fwd = { protocol: "tcp" as const, hostAddress: "127.0.0.1", hostPort: 80, guestPort: 80 };
    const bad: QemuCommandSpec[] = [
      { ...base, network: { portForwards: [{ ...fwd, hostPort: 0 }] } },
      { ...base, network: { portForwards: [{ ...fwd, guestPort: 70000 }] } },
      { ...base, network: { portForwards: [{ ...fwd, hostAddress: "127.0.0.1,guestfwd=x" }] } },
      { ...base, network: { portForwards: [fwd, fwd] } },
      { ...base, volumes: [{ tag: "a,b", hostPath: "/x", readOnly: false }] },
      { ...base, memoryMib: 16 },
      { ...base, vcpus: 0 },
    ];
    for (const spec of bad) {
      let code: unknown;
      try {
        buildQemuArgs(spec);
      } catch (err) {
        code = (err as { code?: unknown }).code;
      }
      expect(code, JSON.stringify(spec)).toBe("INVALID_PARAMS");
    }
  });

  it("installs QEMU's seccomp filter with every optional deny, unless turned off", () => {
    const on = buildQemuArgs(base);
    expect(values(on, "-sandbox")).toEqual([
      "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]);
    expect(values(buildQemuArgs({ ...base, seccomp: false }), "-sandbox")).toEqual([]);
  });

  it("registers inherited descriptors as fd sets a drive can name", () => {
    const args = buildQemuArgs({
      ...base,
      rootfsPath: "/dev/fdset/1",
      fdSets: [{ fd: 5, set: 1 }],
    });
    expect(values(args, "-add-fd")).toEqual(["fd=5,set=1"]);
    // The fd set exists before the drive that uses it is parsed.
    expect(args.indexOf("-add-fd")).toBeLessThan(args.indexOf("-drive"));
    expect(values(args, "-drive")[0]).toContain("file=/dev/fdset/1,");
    expect(() => buildQemuArgs({ ...base, fdSets: [{ fd: 1, set: 1 }] })).toThrow(/fd 1/);
  });
});

describe("buildQemuArgs for templates and clones", () => {
  it("puts a template's RAM in a shared file the snapshot maps instead of copying", () => {
    const args = buildQemuArgs({ ...base, memoryFile: { path: "/shm/t,1/mem", shared: true } });
    expect(values(args, "-M")).toEqual(["microvm,rtc=on,acpi=off,memory-backend=mem"]);
    expect(values(args, "-object")).toEqual([
      "memory-backend-file,id=mem,size=512M,mem-path=/shm/t,,1/mem,share=on",
    ]);
    expect(values(args, "-m")).toEqual(["512"]);
    expect(args).not.toContain("-incoming");
  });

  it("maps a clone's RAM privately and waits for the snapshot", () => {
    const args = buildQemuArgs({
      ...base,
      memoryFile: { path: "/shm/t/mem", shared: false },
      incoming: true,
    });
    expect(values(args, "-object")[0]).toMatch(/share=off$/);
    expect(values(args, "-incoming")).toEqual(["defer"]);
  });

  it("gives a clone the template's devices in the template's order, port forwards aside", () => {
    const devices = (spec: QemuCommandSpec): string[] => values(buildQemuArgs(spec), "-device");
    const template = { ...base, memoryFile: { path: "/m", shared: true } };
    const clone = {
      ...base,
      memoryFile: { path: "/m", shared: false },
      incoming: true,
      network: {
        portForwards: [
          { protocol: "tcp", hostAddress: "127.0.0.1", hostPort: 8080, guestPort: 80 },
        ] as const,
      },
    };
    expect(devices(clone)).toEqual(devices(template));
  });
});
