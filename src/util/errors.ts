/**
 * An error a user can act on: what is wrong and how to fix it. The CLI prints these without a
 * stack trace; anything else is a bug and keeps its stack.
 */
export class ResrtError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(hint ? `${message}\n  fix: ${hint}` : message);
    this.name = 'ResrtError';
  }
}
