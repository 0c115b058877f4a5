export {
  API_KEY_PREFIX,
  createApiKey,
  verifyApiKey,
  type CreateApiKeyOptions,
  type ServerSecret,
  type VerifiedApiKey,
} from "./api-key.js";
export { parseDuration } from "./duration.js";
export { ALL_NAMESPACES, NAME_PATTERN, isValidName } from "./names.js";
export {
  SERVER_SECRET_FILE,
  deriveServerSecret,
  loadOrCreateServerSecret,
} from "./server-secret.js";
