/** The storage alarm of the server (src/store/errors.ts StorageAlarm), logged and exported as metrics. */
import { StorageAlarm } from "../store/errors.ts";
import { log } from "./log.ts";
import type { Metrics } from "./metrics.ts";

/**
 * The storage alarm, logged and exported: `switchboard_storage_alarm` is 1 while any store file
 * cannot commit, `switchboard_storage_faults_total{cause}` counts the faults raised.
 */
export function storageAlarm(mt: Metrics): StorageAlarm {
  const help = "Store files that failed to commit on the disk, by cause (disk_full, io_error).";
  const faults = { disk_full: mt.counter("switchboard_storage_faults_total", help, { cause: "disk_full" }), io_error: mt.counter("switchboard_storage_faults_total", help, { cause: "io_error" }) };
  const alarm = new StorageAlarm((file, fault) => {
    if (fault !== null) {
      faults[fault.cause].inc();
      log.error("storage fault: new sends are refused until the file commits again (retried every second)", { file, cause: fault.cause, err: fault.message });
    } else log.warn("storage recovered: the file commits again, sends are accepted", { file });
  });
  mt.gauge("switchboard_storage_alarm", "1 while a store file cannot commit (disk full, I/O error): new sends are refused with storage_unavailable; 0 otherwise.", () => (alarm.active ? 1 : 0));
  return alarm;
}
