// A module without a factory export.
export const notAFactory = 42;
