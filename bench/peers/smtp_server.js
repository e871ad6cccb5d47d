#!/usr/bin/env node
// bench/peers/smtp_server.js: Node's smtp-server (npm package `smtp-server`,
// installed into bench/peers/node_modules by bench/setup.sh) as a peer of
// mod_esmtp in bench/run (issue 13).
//
//   node bench/peers/smtp_server.js --port PORT --mode discard|durable [--maildir DIR]
//
// The usual way to run it: one process, one event loop, every session in it;
// file I/O goes through libuv's thread pool (UV_THREADPOOL_SIZE, default 4).
// Accepts any sender and recipient. discard: the message stream is read and
// thrown away, then 250. durable: the message is written to DIR/tmp/NAME,
// fsync()ed (the file only: the directories are never fsynced, like the
// peers measured in issue 13), closed, renamed to DIR/new/NAME, then 250.
// No reverse DNS lookup (like Postfix with smtpd_peername_lookup = no), no
// AUTH, no STARTTLS, no logging. Prints "listening PORT" on stdout when ready
// and stops on SIGTERM.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { pipeline } = require('stream/promises');
const { Writable } = require('stream');
const { SMTPServer } = require(path.join(__dirname, 'node_modules', 'smtp-server'));

function parseArgs(argv) {
    const args = { port: 0, mode: 'discard', maildir: null, host: '127.0.0.1' };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const v = argv[i + 1];
        if (a === '--port') { args.port = Number(v); i++; }
        else if (a === '--mode') { args.mode = v; i++; }
        else if (a === '--maildir') { args.maildir = v; i++; }
        else if (a === '--host') { args.host = v; i++; }
        else { throw new Error('unknown argument ' + a); }
    }
    if (!['discard', 'durable'].includes(args.mode)) throw new Error('--mode discard|durable');
    if (args.mode === 'durable' && !args.maildir) throw new Error('--maildir DIR is needed in durable mode');
    return args;
}

const args = parseArgs(process.argv.slice(2));
const host = os.hostname().replace(/[/:]/g, '_');
let seq = 0;

if (args.mode === 'durable') {
    for (const sub of ['tmp', 'new', 'cur']) fs.mkdirSync(path.join(args.maildir, sub), { recursive: true });
}

// a Maildir name: unique within this (single) process by the sequence number
function maildirName() {
    const t = process.hrtime.bigint();
    return `${Math.floor(Date.now() / 1000)}.M${t % 1000000n}P${process.pid}Q${++seq}.${host}`;
}

async function store(stream) {
    const name = maildirName();
    const tmp = path.join(args.maildir, 'tmp', name);
    const fh = await fs.promises.open(tmp, 'wx', 0o600);
    try {
        for await (const chunk of stream) await fh.write(chunk);
        await fh.sync(); // fsync(2) of the file; the directories are not fsynced
    } finally {
        await fh.close();
    }
    await fs.promises.rename(tmp, path.join(args.maildir, 'new', name));
    return name;
}

function discard(stream) {
    return pipeline(stream, new Writable({ write(_chunk, _enc, cb) { cb(); } }));
}

const server = new SMTPServer({
    name: 'mx.bench.test',
    banner: 'smtp-server (Node.js) bench peer',
    disabledCommands: ['AUTH', 'STARTTLS'],
    authOptional: true,
    disableReverseLookup: true,
    logger: false,
    onData(stream, session, callback) {
        if (args.mode === 'durable') {
            store(stream).then(name => callback(null, 'queued as ' + name), err => callback(err));
        } else {
            discard(stream).then(() => callback(null, 'discarded'), err => callback(err));
        }
    },
});

server.on('error', err => {
    process.stderr.write('smtp_server.js: ' + (err && err.stack || err) + '\n');
    if (!server.server.listening) process.exit(1); // e.g. EADDRINUSE
});

server.listen(args.port, args.host, () => {
    process.stdout.write('listening ' + server.server.address().port + '\n');
});

process.on('SIGTERM', () => {
    server.close(() => process.exit(0));
    // sessions still open (none after a run) would hold close() up
    setTimeout(() => process.exit(0), 2000).unref();
});
