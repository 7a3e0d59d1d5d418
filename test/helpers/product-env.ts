// The children tests start are the product (CLI, supervisor, daemons), not
// tests. tap passes its process-info hook down to every child through
// NODE_OPTIONS; loaded into a lab daemon it slowed start-up from 1.5 s to
// 9-11 s, long enough that the supervisor took a crash loop for a one-off
// crash. Imported for its effect, before anything spawns.
for (const key of Object.keys(process.env)) {
  if (key === 'NODE_OPTIONS' || key.startsWith('_TAPJS_PROCESSINFO')) delete process.env[key];
}
