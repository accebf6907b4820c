// Exports no factory: loading it must fail with a ConfigError naming the exports.
export const something = 1;
export function helper(): void {}
