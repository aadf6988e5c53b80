// qnet's command-line entry: dispatches the first word to a subcommand module.
const USAGE = `usage: qnet <command> [options]

commands:
  switch   run a bare L2 switch that QEMU guests join over socket netdevs
  user     run a user-mode network (QEMU's -netdev user, served by qnet)
  qemu     lint, explain, convert and adopt QEMU network options
  help     show this text
`;

type Command = (argv: string[]) => Promise<number>;

const commands: Record<string, () => Promise<Command>> = {
  switch: async () => (await import('./switch.ts')).main,
  user: async () => (await import('./user.ts')).main,
  qemu: async () => (await import('./qemu.ts')).main,
};

async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
    return cmd ? 0 : 2;
  }
  const load = commands[cmd];
  if (!load) {
    process.stderr.write(`qnet: unknown command '${cmd}'\n${USAGE}`);
    return 2;
  }
  return (await load())(rest);
}

run(process.argv.slice(2)).then(
  (code) => { if (code !== 0) process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`qnet: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
