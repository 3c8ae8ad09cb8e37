// A static server for the browser page: the page at /, the checkpoint folder (--model DIR) at /checkpoint/.
// `node examples/browser/serve.mjs --model ../shared/fixtures/tiny-llama [--port 8080]`, then open the printed URL.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const types = { '.html': 'text/html', '.js': 'text/javascript', '.map': 'application/json', '.json': 'application/json' };

/** Serves `here` and `model`; resolves with the server and its URL once listening. */
export function serve(model, port = 0) {
  const roots = [['/checkpoint/', path.resolve(model)], ['/', here]];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const pathname = decodeURIComponent(url.pathname === '/' ? '/index.html' : url.pathname);
    const [prefix, dir] = roots.find(([p]) => pathname.startsWith(p));
    const file = path.join(dir, pathname.slice(prefix.length));
    if (!file.startsWith(dir + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}/` })));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { model: { type: 'string' }, port: { type: 'string', default: '8080' } } });
  if (!values.model) {
    console.error('usage: node examples/browser/serve.mjs --model DIR [--port 8080]');
    process.exit(1);
  }
  const { buildPage } = await import('./build.mjs');
  await buildPage();
  const { url } = await serve(values.model, Number(values.port));
  console.log(`open ${url}?ids=1,2,3&n=16`);
}
