// validate and graph: read a topology file without creating anything.
import { describeModel, graphModel } from '../topology/describe.js';
import { loadTopology } from '../topology/load.js';
import { UsageError } from './usage.js';

export async function topologyMain(cmd: 'validate' | 'graph', values: { file?: string; json?: boolean; format?: string }): Promise<number> {
  if (!values.file) throw new UsageError(`${cmd}: -f FILE is required`);
  if (cmd === 'graph') {
    const format = values.format ?? 'mermaid';
    if (format !== 'mermaid' && format !== 'dot') throw new UsageError(`graph: --format '${format}' must be mermaid or dot`);
    process.stdout.write(graphModel(await loadTopology(values.file), format));
    return 0;
  }
  if (values.format !== undefined) throw new UsageError('validate: --format belongs to graph (validate takes --json)');
  const m = await loadTopology(values.file);
  process.stdout.write(values.json ? JSON.stringify({ file: values.file, ok: true, ...m }, null, 1) + '\n' : describeModel(m, values.file));
  return 0;
}
