/**
 * `seal` entry point: global flags, dispatch to a command, one-line errors, exit codes.
 */
import { readFileSync } from 'node:fs';
import type * as Util from 'node:util';
import { escapeControls, isSealError, UsageError } from '../errors.ts';
import { projectUrl } from '../util/paths.ts';
import type { Command, CommandContext, OptionSpec } from './command.ts';
import { loadCommands } from './commands/index.ts';
import { createProgress } from './progress.ts';

// Taken as a CommonJS module: the ESM facade of node:util evaluates every lazy export, some 4 ms
// of every command for one function.
const { parseArgs } = process.getBuiltinModule('node:util') as typeof Util;

const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  json: { type: 'boolean', description: 'print machine-readable JSON' },
  debug: { type: 'boolean', description: 'print stack traces on failure' },
  help: { type: 'boolean', short: 'h', description: 'show help' },
};

function version(): string {
  const pkg = JSON.parse(readFileSync(projectUrl('package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

function findCommand(commands: Command[], words: string[]): { command: Command; rest: string[] } | undefined {
  let best: Command | undefined;
  for (const command of commands) {
    if (command.path.every((w, i) => words[i] === w) && (!best || command.path.length > best.path.length)) {
      best = command;
    }
  }
  return best ? { command: best, rest: words.slice(best.path.length) } : undefined;
}

function optionLines(options: Record<string, OptionSpec>): string[] {
  return Object.entries(options).map(([name, spec]) => {
    const value = spec.value ?? spec.choices?.join('|') ?? 'VALUE';
    const flag = `${spec.short ? `-${spec.short}, ` : ''}--${name}${spec.type === 'string' ? (spec.implicit === undefined ? ` ${value}` : `[=${value}]`) : ''}`;
    return `  ${flag.padEnd(30)} ${spec.description}`;
  });
}

/**
 * What parseArgs cannot express: a bare `--NAME` of an option with an implicit value becomes
 * `--NAME=IMPLICIT`, or `--NAME=WORD` when the next word is one of its choices.
 */
function joinImplicitValues(argv: string[], spec: Record<string, OptionSpec>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') return [...out, ...argv.slice(i)];
    const name = arg.slice(2);
    const option = arg.startsWith('--') && Object.hasOwn(spec, name) ? spec[name] : undefined;
    if (option?.implicit === undefined) {
      out.push(arg);
      continue;
    }
    const next = argv[i + 1];
    const value = next !== undefined && option.choices?.includes(next) ? argv[++i] : option.implicit;
    out.push(`${arg}=${value}`);
  }
  return out;
}

/** Values outside an option's choices are usage errors. */
function checkChoices(spec: Record<string, OptionSpec>, values: Record<string, unknown>): void {
  for (const [name, { choices }] of Object.entries(spec)) {
    if (!choices || values[name] === undefined) continue;
    for (const value of [values[name]].flat()) {
      if (!choices.includes(value as string)) {
        const allowed = `${choices.slice(0, -1).join(', ')}${choices.length > 1 ? ' or ' : ''}${choices.at(-1)}`;
        throw new UsageError(`--${name} takes ${allowed}, not ${JSON.stringify(value)}`);
      }
    }
  }
}

function commandHelp(command: Command): string {
  return [
    `Usage: seal ${command.path.join(' ')} ${command.args}`.trimEnd(),
    '',
    command.summary,
    ...(command.details ? ['', command.details] : []),
    '',
    'Options:',
    ...optionLines({ ...command.options, ...GLOBAL_OPTIONS }),
  ].join('\n');
}

function groupHelp(commands: Command[], prefix: string[]): string {
  const matching = commands.filter((c) => prefix.every((w, i) => c.path[i] === w));
  const width = Math.max(...matching.map((c) => c.path.join(' ').length + c.args.length + 1));
  return [
    `Usage: seal ${prefix.length ? `${prefix.join(' ')} ` : ''}COMMAND [OPTIONS]`,
    '',
    prefix.length
      ? `Commands under "seal ${prefix.join(' ')}":`
      : 'Seal: build, seal, sign, ship and boot verifiable OCI-based systems.',
    '',
    ...matching.map((c) => `  ${`${c.path.join(' ')} ${c.args}`.padEnd(width + 2)} ${c.summary}`),
    '',
    'Global options:',
    ...optionLines({ ...GLOBAL_OPTIONS, version: { type: 'boolean', description: 'print the version' } }),
    '',
    'Run "seal COMMAND --help" for the options of a command.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const debug = argv.includes('--debug');
  const json = argv.includes('--json');
  try {
    if (argv.includes('--version') && !argv.some((a) => !a.startsWith('-'))) {
      console.log(json ? JSON.stringify({ version: version() }) : `seal ${version()}`);
      return 0;
    }
    const words = argv.filter((a) => !a.startsWith('-'));
    const commands = await loadCommands(words[0]);
    const found = findCommand(commands, words);
    if (!found) {
      const prefix = words.filter((_, i) =>
        commands.some((c) => words.slice(0, i + 1).every((w, j) => c.path[j] === w)),
      );
      if (
        argv.includes('--help') ||
        argv.includes('-h') ||
        words.length === 0 ||
        prefix.length === words.length
      ) {
        console.log(groupHelp(commands, prefix));
        return words.length === 0 && !argv.includes('--help') && !argv.includes('-h') ? 2 : 0;
      }
      throw new UsageError(`unknown command "${words.join(' ')}"; run "seal --help"`);
    }
    const { command } = found;
    const spec = { ...command.options, ...GLOBAL_OPTIONS };
    const parsed = parseArgs({
      args: joinImplicitValues(argv, spec),
      options: Object.fromEntries(
        Object.entries(spec).map(([name, o]) => [
          name,
          {
            type: o.type,
            ...(o.short ? { short: o.short } : {}),
            ...(o.multiple ? { multiple: true } : {}),
            ...(o.default !== undefined ? { default: o.default } : {}),
          },
        ]),
      ) as never,
      allowPositionals: true,
      strict: true,
    }) as { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] };
    if (parsed.values.help) {
      console.log(commandHelp(command));
      return 0;
    }
    checkChoices(spec, parsed.values);
    const positionals = parsed.positionals.slice(command.path.length);
    const [min, max] = command.arity;
    if (positionals.length < min || positionals.length > max) {
      throw new UsageError(`usage: seal ${command.path.join(' ')} ${command.args}`);
    }
    const ctx: CommandContext = {
      json,
      debug,
      print: (line) => {
        if (!json) process.stdout.write(`${line}\n`);
      },
      result: (value) => {
        if (json) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
      },
      progress: (label, total) => createProgress(label, total, !json),
    };
    return (await command.run(ctx, positionals, parsed.values)) ?? 0;
  } catch (error) {
    return reportFailure(error, debug);
  }
}

function reportFailure(error: unknown, debug: boolean): number {
  if (debug && error instanceof Error && error.stack) process.stderr.write(`${error.stack}\n`);
  if (isSealError(error)) {
    process.stderr.write(`seal: ${error.message}${error.code === 'USAGE' ? '' : ` [${error.code}]`}\n`);
    return error.code === 'USAGE' ? 2 : 1;
  }
  // Anything else is escaped here: its message may quote an input too.
  const e = error as NodeJS.ErrnoException;
  if (e && typeof e === 'object' && typeof e.code === 'string' && e.path) {
    process.stderr.write(`seal: ${escapeControls(`${e.path}: ${e.message.replace(/^[A-Z]+: /, '')}`)}\n`);
  } else if (e?.code?.startsWith?.('ERR_PARSE_ARGS')) {
    process.stderr.write(`seal: ${escapeControls(e.message)}\n`);
    return 2;
  } else {
    process.stderr.write(`seal: ${escapeControls(error instanceof Error ? error.message : String(error))}\n`);
  }
  return 1;
}

if (import.meta.main) {
  // A reader that stops early (`seal squashfs ls IMG | head`) is not a failure.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
  process.exitCode = await main(process.argv.slice(2));
}
