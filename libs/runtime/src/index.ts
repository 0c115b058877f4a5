export { withDeadline, throwIfAborted } from "./abort.js";
export { createLogger, REDACTED_PATHS, type CreateLoggerOptions, type Logger } from "./logger.js";
export {
  createLifecycle,
  runMain,
  type Lifecycle,
  type LifecycleOptions,
  type RunMainOptions,
  type ShutdownHook,
} from "./shutdown.js";
