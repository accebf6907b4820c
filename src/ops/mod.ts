/**
 * Operations: how the proxy is run and seen from outside. Logging (text, syslog, files), the
 * `-D` background process, and `--workers` processes sharing one port.
 *
 * @module
 */

export { closeLogging, flushLog, getLog, type Log, setupLogging } from "./log.ts";
export { daemonize, isDaemonChild, READY_LINE } from "./daemon.ts";
export { forkWorkers, workerRole } from "./workers.ts";
