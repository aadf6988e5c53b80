export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('qnet user: not implemented yet\n');
  return 1;
}
