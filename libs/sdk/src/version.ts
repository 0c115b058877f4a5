/** The SDK's version, sent as `User-Agent: microsandbox-js/<version>`. Keep in step with package.json. */
export const SDK_VERSION = "0.1.0";
