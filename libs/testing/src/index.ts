export { freePort, waitFor, type WaitForOptions } from "./net.js";
export { tempDir, type TempDir } from "./temp-dir.js";
export { seededRandom } from "./random.js";
export { startRegistry, type StartRegistryOptions, type TestRegistry } from "./registry.js";
export { tarArchive, type TarEntry } from "./tar.js";
export {
  pushRawImage,
  sha256Digest,
  type PushRawImageOptions,
  type PushedRawImage,
  type RawLayer,
} from "./push.js";
export {
  MSB_CLI,
  startMsbServer,
  type MsbServer,
  type StartMsbServerOptions,
} from "./msb-server.js";
