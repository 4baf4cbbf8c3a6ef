#!/usr/bin/env node
// Run Cohort ONNX exports in the real ONNX Runtime (the npm package onnxruntime-node,
// CPU execution provider), for the Go tests in export/ and cmd/cohort.
//
// Usage:
//   node scripts/onnxruntime-check.mjs --version     prints {"onnxruntime": VERSION}
//   node scripts/onnxruntime-check.mjs REQUEST.json  runs the models, prints the results
//
// onnxruntime-node is loaded from $COHORT_ONNXRUNTIME_DIR/node_modules, by default
// bin/tools/onnxruntime/node_modules, where `make deps` installs it
// (npm install --ignore-scripts: the package's install script only fetches GPU
// libraries; the CPU library ships inside the package).
//
// REQUEST.json: {"runs": [{"model": PATH, "feeds": {NAME: TENSOR, ...}}, ...]}
// TENSOR: {"type": "float32"|"string"|"uint8"|"int64", "dims": [...], "data": [...]},
// data flat in row-major order; a float32 null is NaN (JSON has no NaN).
// Output, one JSON object on stdout:
//   {"onnxruntime": VERSION, "results": [{"inputNames": [...], "outputNames": [...],
//    "outputs": {NAME: TENSOR, ...}}, ...]}
// with a non-finite float written as null. Each session runs on one thread. Any error
// (a model that does not load, a feed that does not fit) exits 1 with the reason on
// stderr.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = path.resolve(process.env.COHORT_ONNXRUNTIME_DIR || path.join(here, '..', 'bin', 'tools', 'onnxruntime'));

function fail(msg, code = 1) {
  process.stderr.write(msg + '\n');
  process.exit(code);
}

let ort;
let version;
try {
  const require = createRequire(path.join(dir, 'package.json'));
  ort = require('onnxruntime-node');
  version = JSON.parse(readFileSync(path.join(dir, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')).version;
} catch (e) {
  fail(`onnxruntime-node is not installed under ${dir} (run make deps): ${e.message}`, 3);
}

function toTensor(name, t) {
  if (!t || !Array.isArray(t.dims) || !Array.isArray(t.data)) {
    throw new Error(`feed ${name}: want {"type", "dims", "data"}`);
  }
  switch (t.type) {
    case 'float32':
      return new ort.Tensor('float32', Float32Array.from(t.data, (v) => (v === null ? NaN : v)), t.dims);
    case 'string':
      return new ort.Tensor('string', t.data.map(String), t.dims);
    case 'uint8':
      return new ort.Tensor('uint8', Uint8Array.from(t.data), t.dims);
    case 'int64':
      return new ort.Tensor('int64', BigInt64Array.from(t.data, (v) => BigInt(v)), t.dims);
    default:
      throw new Error(`feed ${name}: type ${t.type} is not float32, string, uint8 or int64`);
  }
}

function fromTensor(t) {
  let data;
  switch (t.type) {
    case 'string':
      data = Array.from(t.data);
      break;
    case 'int64':
    case 'uint64':
      data = Array.from(t.data, (v) => Number(v));
      break;
    case 'bool':
      data = Array.from(t.data, (v) => (v ? 1 : 0));
      break;
    default:
      data = Array.from(t.data, (v) => (Number.isFinite(v) ? v : null));
  }
  return { type: t.type, dims: Array.from(t.dims), data };
}

async function main(args) {
  if (args.length === 1 && args[0] === '--version') {
    process.stdout.write(JSON.stringify({ onnxruntime: version }) + '\n');
    return;
  }
  if (args.length !== 1) {
    fail('usage: onnxruntime-check.mjs --version | REQUEST.json', 2);
  }
  const req = JSON.parse(readFileSync(args[0], 'utf8'));
  const results = [];
  for (const [i, run] of (req.runs || []).entries()) {
    let session;
    try {
      session = await ort.InferenceSession.create(run.model, {
        executionProviders: ['cpu'],
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
      });
    } catch (e) {
      fail(`runs[${i}]: ${run.model}: the model does not load: ${e.message}`);
    }
    const feeds = {};
    try {
      for (const [name, t] of Object.entries(run.feeds || {})) {
        feeds[name] = toTensor(name, t);
      }
    } catch (e) {
      fail(`runs[${i}]: ${e.message}`);
    }
    let out;
    try {
      out = await session.run(feeds);
    } catch (e) {
      fail(`runs[${i}]: ${run.model}: run: ${e.message}`);
    }
    const outputs = {};
    for (const name of session.outputNames) {
      outputs[name] = fromTensor(out[name]);
    }
    results.push({ inputNames: session.inputNames, outputNames: session.outputNames, outputs });
    await session.release();
  }
  process.stdout.write(JSON.stringify({ onnxruntime: version, results }) + '\n');
}

main(process.argv.slice(2)).catch((e) => fail(e.stack || String(e)));
