import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import { gzipSync } from "node:zlib";
import { MsbError } from "@msb/errors";
import { freePort, sha256Digest, tarArchive, tempDir, type TempDir } from "@msb/testing";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { runOperation } from "../progress.js";
import { createImageService, type ImageService } from "../service.js";

// Issue 12, item 2: a tenant who can make the image service pull a reference must not reach
// what the host reaches. Every listener here is real and on loopback; the "internal" one
// stands for a service that only the host may talk to (a metadata endpoint, an admin API).

const SECRET = "INTERNAL-ONLY-7f3a9c";

interface Listener {
  readonly host: string;
  readonly port: number;
  /** Requests that reached it (method and path). */
  readonly hits: string[];
  close(): Promise<void>;
}

/** Listens on 127.0.0.1:0; `close` also ends every connection the server still has. */
async function start(server: Server | TcpServer, hits: string[]): Promise<Listener> {
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  const close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  return { host: `127.0.0.1:${port}`, port, hits, close };
}

/** An HTTP server answering every request with `status`, `type` and `body`, counting hits. */
function httpListener(status: number, type: string, body: string): Promise<Listener> {
  const hits: string[] = [];
  const server = createHttpServer((req, res) => {
    hits.push(`${req.method} ${req.url}`);
    res.writeHead(status, { "content-type": type }).end(body);
  });
  return start(server, hits);
}

/** An internal-only service: every request gets `status` and a body holding {@link SECRET}. */
const internalListener = (status = 200) =>
  httpListener(status, "text/plain", `${SECRET} root:x:0:0 aws_secret_access_key=AKIA${SECRET}\n`);

/** An HTTP server that is not a registry: 404 with an HTML page for everything. */
const webListener = () =>
  httpListener(404, "text/html", `<html><body>Not here. ${SECRET}</body></html>`);

/** A TCP server that answers like SSH (a banner, then close): open, but not HTTP. */
function bannerListener(): Promise<Listener> {
  const hits: string[] = [];
  const server = createTcpServer((socket) => {
    hits.push("connect");
    socket.end(`SSH-2.0-OpenSSH_9.2 ${SECRET}\r\n`);
  });
  return start(server, hits);
}

/**
 * A minimal OCI registry serving one image `evil/app:v1` whose layer blob answers with a
 * redirect to `redirectTo` (or the layer itself when undefined), and whose /v2/ answers with a
 * Bearer challenge pointing at `realm` when given.
 */
async function hostileRegistry(options: {
  redirectTo?: () => string;
  realm?: () => string;
  /** Send half the layer, then drop the connection. */
  cutLayer?: boolean;
}): Promise<Listener> {
  const hits: string[] = [];
  const layer = gzipSync(tarArchive([{ path: "hello", content: "hello" }]));
  const layerDigest = sha256Digest(layer);
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: {},
      rootfs: { type: "layers", diff_ids: [layerDigest] },
    }),
  );
  const configDigest = sha256Digest(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {
        mediaType: "application/vnd.oci.image.config.v1+json",
        digest: configDigest,
        size: config.length,
      },
      layers: [
        {
          mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
          digest: layerDigest,
          size: layer.length,
        },
      ],
    }),
  );
  const authorized = (req: IncomingMessage) =>
    options.realm === undefined || req.headers.authorization === "Bearer t0ken";
  const server = createHttpServer((req, res) => {
    hits.push(`${req.method} ${req.url}`);
    const url = req.url ?? "";
    const api = { "docker-distribution-api-version": "registry/2.0" };
    if (!authorized(req)) {
      res.writeHead(401, {
        ...api,
        "www-authenticate": `Bearer realm="${options.realm?.()}",service="evil"`,
      });
      res.end('{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}');
      return;
    }
    if (url === "/v2/") {
      res.writeHead(200, api).end("{}");
    } else if (url === "/v2/evil/app/manifests/v1") {
      res.writeHead(200, {
        ...api,
        "content-type": "application/vnd.oci.image.manifest.v1+json",
        "docker-content-digest": sha256Digest(manifest),
      });
      res.end(req.method === "HEAD" ? undefined : manifest);
    } else if (url === `/v2/evil/app/blobs/${configDigest}`) {
      res.writeHead(200, api).end(config);
    } else if (url === `/v2/evil/app/blobs/${layerDigest}` && options.cutLayer === true) {
      res.writeHead(200, { ...api, "content-length": String(layer.length) });
      res.write(layer.subarray(0, layer.length >> 1), () => res.destroy());
    } else if (url === `/v2/evil/app/blobs/${layerDigest}` && options.redirectTo !== undefined) {
      res.writeHead(307, { ...api, location: options.redirectTo() }).end();
    } else if (url === `/v2/evil/app/blobs/${layerDigest}` || url === "/storage/layer") {
      res.writeHead(200, api).end(layer);
    } else {
      res.writeHead(404, api).end('{"errors":[{"code":"NOT_FOUND","message":"nope"}]}');
    }
  });
  return start(server, hits);
}

async function pullError(service: ImageService, reference: string): Promise<MsbError> {
  const err = await runOperation(service.pull(reference, "")).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "the pull must fail").toBeInstanceOf(MsbError);
  return err as MsbError;
}

/** Everything a caller sees of an error (message, details, code) as one string. */
function visible(err: MsbError): string {
  return JSON.stringify({ code: err.code, message: err.message, details: err.details });
}

describe("image pulls cannot be used to reach the host's network (issue 12, item 2)", () => {
  const homes: TempDir[] = [];
  const listeners: Listener[] = [];

  async function service(registries?: readonly string[]): Promise<ImageService> {
    const home = await tempDir("msb-ssrf-");
    homes.push(home);
    return createImageService({
      home: home.path,
      cacheDir: home.path,
      rootfsCache: false,
      insecureRegistries: [],
      registryAuth: {},
      ...(registries === undefined ? {} : { registries }),
    });
  }
  async function track<T extends Listener>(listener: Promise<T>): Promise<T> {
    const l = await listener;
    listeners.push(l);
    return l;
  }

  afterEach(async () => {
    await Promise.all(listeners.splice(0).map((l) => l.close()));
  });
  afterAll(async () => {
    await Promise.all(homes.map((h) => h.remove()));
  });

  it("does not contact a registry that is not in MSB_REGISTRIES, and never shows an internal listener's body", async () => {
    const internal = await track(internalListener());
    const err = await pullError(await service(), `${internal.host}/x/y`);
    expect(err.code, err.message).toBe("POLICY_DENIED");
    expect(err.message).toContain("MSB_REGISTRIES");
    expect(visible(err)).not.toContain(SECRET);
    expect(internal.hits).toEqual([]);
  });

  it.each([200, 500])(
    "never echoes the body of a listed registry that answers HTTP %i with something else",
    async (status) => {
      const internal = await track(internalListener(status));
      const err = await pullError(await service([internal.host]), `${internal.host}/x/y`);
      expect(err.code, err.message).toBe("REGISTRY_UNREACHABLE");
      expect(visible(err)).not.toContain(SECRET);
    },
  );

  it("gives one error for a closed port, an open non-HTTP port and an HTTP server that is no registry", async () => {
    const closed = await freePort();
    const banner = await track(bannerListener());
    const web = await track(webListener());
    const hosts = [`127.0.0.1:${closed}`, banner.host, web.host];
    for (const registries of [undefined, hosts]) {
      const svc = await service(registries);
      const errors = await Promise.all(hosts.map((h) => pullError(svc, `${h}/scan/probe`)));
      const shapes = errors.map((e, i) => {
        expect(visible(e)).not.toContain(SECRET);
        return visible(e)
          .split(hosts[i] as string)
          .join("<registry>");
      });
      expect(new Set(shapes).size, shapes.join("\n")).toBe(1);
      // Unlisted, nothing was contacted at all.
      if (registries === undefined) expect([...banner.hits, ...web.hits]).toEqual([]);
    }
  });

  it("refuses a listed registry's blob redirect to loopback (any spelling) without contacting it", async () => {
    const internal = await track(internalListener());
    const targets = [
      `http://127.0.0.1:${internal.port}/latest/meta-data/`,
      `http://localhost:${internal.port}/latest/meta-data/`,
      `http://2130706433:${internal.port}/latest/meta-data/`,
      `http://[::ffff:127.0.0.1]:${internal.port}/latest/meta-data/`,
      `http://127.1:${internal.port}/latest/meta-data/`,
    ];
    for (const target of targets) {
      const registry = await track(hostileRegistry({ redirectTo: () => target }));
      const err = await pullError(await service([registry.host]), `${registry.host}/evil/app:v1`);
      expect(err.code, `${target}: ${err.message}`).toBe("IMAGE_PULL_FAILED");
      expect(err.message).toContain("redirect");
      expect(visible(err)).not.toContain(SECRET);
    }
    expect(internal.hits).toEqual([]);
  });

  it("follows a redirect to the listed registry itself", async () => {
    let self = "";
    const registry: Listener = await track(
      hostileRegistry({ redirectTo: () => `http://${self}/storage/layer` }),
    );
    self = registry.host;
    const image = await runOperation(
      (await service([registry.host])).pull(`${registry.host}/evil/app:v1`, ""),
    );
    expect(image.reference).toBe(`${registry.host}/evil/app:v1`);
    expect(registry.hits).toContain("GET /storage/layer");
  });

  it("does not fetch a token from a loopback realm the registry names", async () => {
    const internal = await track(internalListener());
    const registry = await track(
      hostileRegistry({ realm: () => `http://127.0.0.1:${internal.port}/token` }),
    );
    const err = await pullError(await service([registry.host]), `${registry.host}/evil/app:v1`);
    expect(visible(err)).not.toContain(SECRET);
    expect(internal.hits).toEqual([]);
  });

  it("reports a download cut off mid-blob as IMAGE_PULL_FAILED (resumable), not an internal error", async () => {
    const registry = await track(hostileRegistry({ cutLayer: true }));
    const err = await pullError(await service([registry.host]), `${registry.host}/evil/app:v1`);
    expect(err.code, err.message).toBe("IMAGE_PULL_FAILED");
    expect(err.message).toContain("resume");
  });
});
