// Stop signals for long-running commands. The handlers must be in place before a command
// announces itself: a SIGTERM sent by whoever read the banner would otherwise find Node's
// default action and kill the process mid-way, without cleanup.

/** Resolves with the first SIGINT or SIGTERM received from now on. */
export function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals): void => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
