#!/usr/bin/env node
// Time onnxruntime-node's session.run on a Cohort ONNX export, for `cohort bench serve`.
//
// Reads one JSON command per line on stdin and answers one JSON line on stdout:
//   {"model": PATH, "feeds": {NAME: TENSOR, ...}, "seconds": S, "min": N, "warmup": W}
//   -> {"onnxruntime": VERSION, "latencies_ns": [...]}
// TENSOR is as in scripts/onnxruntime-check.mjs: {"type": "float32"|"string"|"uint8",
// "dims": [...], "data": [...]}. The session is created once per model with one
// intra-op and one inter-op thread (sequential execution); the feeds are built once per
// command; each timed run is one session.run on them, repeated for at least S seconds
// and N runs, after W untimed ones. onnxruntime-node is loaded from
// $COHORT_ONNXRUNTIME_DIR/node_modules (default bin/tools/onnxruntime/node_modules).
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = path.resolve(process.env.COHORT_ONNXRUNTIME_DIR || path.join(here, '..', '..', 'bin', 'tools', 'onnxruntime'));
const require = createRequire(path.join(dir, 'package.json'));
const ort = require('onnxruntime-node');
const version = JSON.parse(readFileSync(path.join(dir, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')).version;

function toTensor(name, t) {
  switch (t.type) {
    case 'float32':
      return new ort.Tensor('float32', Float32Array.from(t.data, (v) => (v === null ? NaN : v)), t.dims);
    case 'string':
      return new ort.Tensor('string', t.data.map(String), t.dims);
    case 'uint8':
      return new ort.Tensor('uint8', Uint8Array.from(t.data), t.dims);
    default:
      throw new Error(`feed ${name}: type ${t.type}`);
  }
}

const sessions = new Map();
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim()) continue;
  try {
    const cmd = JSON.parse(line);
    let s = sessions.get(cmd.model);
    if (!s) {
      s = await ort.InferenceSession.create(cmd.model, {
        intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
      });
      sessions.set(cmd.model, s);
    }
    const feeds = {};
    for (const [name, t] of Object.entries(cmd.feeds)) feeds[name] = toTensor(name, t);
    for (let i = 0; i < (cmd.warmup ?? 3); i++) await s.run(feeds);
    const lat = [];
    const until = process.hrtime.bigint() + BigInt(Math.round((cmd.seconds ?? 1) * 1e9));
    while (lat.length < (cmd.min ?? 10) || process.hrtime.bigint() < until) {
      const t0 = process.hrtime.bigint();
      await s.run(feeds);
      lat.push(Number(process.hrtime.bigint() - t0));
    }
    process.stdout.write(JSON.stringify({ onnxruntime: version, latencies_ns: lat }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: String(e && e.message || e) }) + '\n');
  }
}
