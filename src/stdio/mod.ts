/**
 * Programs over stdio (`--stdio`): one program per WebSocket session, driven as a target
 * connection (`src/stdio/program.ts`).
 *
 * @module
 */

export {
  ProgramConnection,
  programEnv,
  runningPrograms,
  type StdioConfig,
  stopPrograms,
} from "./program.ts";
