// Exports a class rather than a factory.
export default class Plugin {
  authenticate(): Promise<void> {
    return Promise.resolve();
  }
}
