// The process supervisor behind `msb server start`: MSB_HOME layout, the server lock, the
// services it runs and restarts, port ownership, leftovers of a dead server, and logs.
export { LOG_SOURCES, msbPaths, resolveHome, SERVICE_NAMES } from "./home.js";
export type { LogSource, MsbPaths, ServiceName } from "./home.js";
export { killLeftovers, takeOverStale, type Takeover } from "./cleanup.js";
export { acceleratorOf } from "./health.js";
export { alreadyRunningError, readLockState, startCommandOf } from "./lock.js";
export type { LockRecord, LockState } from "./lock.js";
export {
  followLogs,
  mergeByTime,
  readLogEntries,
  readLogTail,
  type FollowTarget,
} from "./log-files.js";
export { formatLogEntry, parseLogLine, WARN_LEVEL, type LogEntry } from "./log-lines.js";
export { assertPortFree, findPortHolder, portInUseError } from "./port-owner.js";
export { ensurePrereqs, type Prereqs } from "./prereqs.js";
export { createProcfsTable, isSameLiveProcess } from "./proc.js";
export { ensurePrivateDir } from "./private-dir.js";
export type { ProcessInfo, ProcessTable } from "./proc.js";
export { runServer, type ServerControl, type ServerReady } from "./run-server.js";
export { deriveServerSecret, secretFromEnv, SECRET_ENV_VARS } from "./secret.js";
export { resolveSigningSecret } from "./secrets.js";
export type { ServerSettings } from "./services.js";
export type { SupervisorEvent } from "./supervisor.js";
