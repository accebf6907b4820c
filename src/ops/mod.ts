/**
 * Operations: how the proxy is run and seen from outside. Logging (text, syslog, files), the
 * `-D` background process, `--workers` processes sharing one port, and the V8 flags the program
 * runs itself again with (`v8_flags.ts`, imported first by main.ts).
 *
 * @module
 */

export { closeLogging, flushLog, getLog, type Log, setupLogging } from "./log.ts";
export { daemonize, isDaemonChild, READY_LINE } from "./daemon.ts";
export { forkWorkers, workerRole } from "./workers.ts";
