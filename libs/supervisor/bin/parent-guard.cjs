// Preloaded (`node --require`) into every service `msb server start` runs, after
// `setpriv --pdeathsig TERM` has set the parent-death signal and exec'd node. PDEATHSIG only
// covers a parent that dies after the prctl: a supervisor killed between its fork and that
// prctl sends nothing, and the service would outlive it. So, once the prctl is done, the
// parent must still be the supervisor named in MSB_SUPERVISOR ("<pid>:<start time>");
// otherwise the service exits before it binds anything.
"use strict";
const expected = Number((process.env.MSB_SUPERVISOR || "").split(":")[0]);
if (Number.isInteger(expected) && expected > 0 && process.ppid !== expected) {
  process.stderr.write(
    `msb: the supervisor (pid ${expected}) that started this service is gone; exiting\n`,
  );
  process.exit(75);
}
