import type { Progress } from "./gen/msb/image/v1/image.js";

/** A progress event with every field defaulted, so callers name only what they know. */
export function progressEvent(fields: Partial<Progress> & { phase: string }): Progress {
  return {
    digest: "",
    currentBytes: 0,
    currentTotalBytes: 0,
    doneBytes: 0,
    totalBytes: 0,
    doneItems: 0,
    totalItems: 0,
    message: "",
    ...fields,
  };
}
