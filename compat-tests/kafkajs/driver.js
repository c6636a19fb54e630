// kafkajs driver of the compatibility matrix (same contract as drivers/common.py):
//   node driver.js FEATURE --bootstrap HOST:PORT --prefix NAME [--role member]
// prints progress on stderr and, last, `RESULT {"status": ..., "detail": ...}` on stdout.
// kafkajs consumes only through consumer groups (it has no assign()), so every feature that
// reads records needs the broker's group APIs.
'use strict'

const crypto = require('crypto')
const { spawn } = require('child_process')
const readline = require('readline')
const {
  Kafka, CompressionTypes, CompressionCodecs, ConfigResourceTypes, logLevel,
} = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const lz4js = require('lz4js')
const { ZstdCodec } = require('zstd-codec')

// Codecs beyond gzip are plug-ins in kafkajs; these are pure JavaScript/WebAssembly ones.
CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = () => ({
  compress: async (encoder) => Buffer.from(lz4js.compress(encoder.buffer)),
  decompress: async (buffer) => Buffer.from(lz4js.decompress(buffer)),
})
let zstdSimple = null
const zstdReady = new Promise((resolve) => ZstdCodec.run((z) => { zstdSimple = new z.Simple(); resolve() }))
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  compress: async (encoder) => { await zstdReady; return Buffer.from(zstdSimple.compress(encoder.buffer, 3)) },
  decompress: async (buffer) => { await zstdReady; return Buffer.from(zstdSimple.decompress(buffer)) },
})

class CheckFailed extends Error {}
class NotSupported extends Error {}
function check (cond, msg) { if (!cond) throw new CheckFailed(msg) }
function log (...a) { process.stderr.write(a.join(' ') + '\n') }

function parseArgs () {
  const argv = process.argv.slice(2)
  const out = { feature: argv[0], role: 'main' }
  for (let i = 1; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1]
  return out
}

const args = parseArgs()
const port = parseInt(args.bootstrap.split(':').pop(), 10)
const topic = (suffix = 't') => `${args.prefix}.${suffix}`
const group = `${args.prefix}.group`
const kafka = new Kafka({
  clientId: 'compat-kafkajs',
  brokers: [args.bootstrap],
  logLevel: logLevel.WARN,
  logCreator: () => ({ namespace, label, log: l }) => log(`[${label}] ${namespace} ${l.message} ${l.error || ''}`),
  retry: { retries: 3 },
})

async function until (seconds, what, fn) {
  const end = Date.now() + seconds * 1000
  for (;;) {
    if (await fn()) return
    if (Date.now() > end) throw new CheckFailed(`timed out after ${seconds}s waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100)) // a poll interval, not a sync
  }
}

async function produce (messages, opts = {}, producerOpts = {}) {
  const p = kafka.producer({ allowAutoTopicCreation: false, ...producerOpts })
  await p.connect()
  try {
    return await p.send({ topic: topic(), messages, ...opts })
  } finally {
    await p.disconnect()
  }
}

// Read `count` records of topic t from the beginning, through a fresh consumer group.
async function readAll (t, count, consumerOpts = {}, seconds = 30) {
  const c = kafka.consumer({ groupId: `${args.prefix}.reader.${crypto.randomUUID()}`, ...consumerOpts })
  const got = []
  await c.connect()
  try {
    await c.subscribe({ topics: [t], fromBeginning: true })
    await c.run({ eachMessage: async ({ partition, message }) => { got.push({ partition, ...message }) } })
    await until(seconds, `${count} records from ${t} (got ${got.length})`, () => got.length >= count)
    return got
  } finally {
    await c.disconnect()
  }
}

function pcRecords (n = 10) {
  const out = []
  for (let i = 0; i < n; i++) {
    out.push({ key: Buffer.from(`key-${i}`), value: Buffer.from(`value-${i}`), headers: { h1: Buffer.from(`hv-${i}`), h2: Buffer.from('') } })
  }
  return out
}
const compressible = (i) => Buffer.from(`record-${String(i).padStart(5, '0')}-` + 'abcdefgh'.repeat(32))

const features = {
  async metadata () {
    const admin = kafka.admin()
    await admin.connect()
    try {
      const cluster = await admin.describeCluster()
      check(cluster.brokers.length === 1, `brokers ${JSON.stringify(cluster.brokers)}`)
      const b = cluster.brokers[0]
      check(b.port === port, `advertised port ${b.port}`)
      const md = await admin.fetchTopicMetadata({ topics: [topic()] })
      const parts = md.topics[0].partitions
      check(parts.map((p) => p.partitionId).sort().join() === '0,1,2', 'partitions')
      check(parts.every((p) => p.leader === b.nodeId), 'leaders')
      return `broker ${b.nodeId} at ${b.host}:${b.port}, ${parts.length} partitions`
    } finally {
      await admin.disconnect()
    }
  },

  async produce_consume () {
    const expected = pcRecords()
    const offsets = []
    for (const m of expected) offsets.push(parseInt((await produce([m]))[0].baseOffset, 10))
    check(offsets.join() === '0,1,2,3,4,5,6,7,8,9', `produce offsets ${offsets}`)
    const got = await readAll(topic(), expected.length)
    got.forEach((r, i) => {
      const e = expected[i]
      check(r.key.equals(e.key) && r.value.equals(e.value), `record ${r.offset}`)
      check(r.headers.h1.equals(e.headers.h1) && r.headers.h2.length === 0, `headers of ${r.offset}`)
      check(parseInt(r.offset, 10) === i && parseInt(r.timestamp, 10) > 0, `offset/timestamp of ${i}`)
    })
    return `${got.length} records`
  },

  ...Object.fromEntries([['gzip', CompressionTypes.GZIP], ['snappy', CompressionTypes.Snappy],
    ['lz4', CompressionTypes.LZ4], ['zstd', CompressionTypes.ZSTD]].map(([name, type]) => [
    `compression.${name}`, async () => {
      const msgs = []
      for (let i = 0; i < 200; i++) msgs.push({ value: compressible(i) })
      await produce(msgs, { compression: type })
      const got = await readAll(topic(), 200)
      check(got.every((r, i) => r.value.equals(compressible(i))), 'values differ')
      return `200 records (${name})`
    }])),

  async ordering () {
    const msgs = []
    for (let s = 0; s < 400; s++) msgs.push({ key: `k${s % 16}`, value: String(s) })
    await produce(msgs, { acks: -1 })
    const got = await readAll(topic(), 400)
    const keyPartition = {}; const lastSeq = {}; const nextOffset = {}
    for (const r of got) {
      const k = r.key.toString(); const seq = parseInt(r.value.toString(), 10); const off = parseInt(r.offset, 10)
      if (keyPartition[k] === undefined) keyPartition[k] = r.partition
      check(keyPartition[k] === r.partition, `${k} split`)
      check(seq > (lastSeq[k] ?? -1), `key ${k}: ${seq} out of order`)
      lastSeq[k] = seq
      check(off === (nextOffset[r.partition] ?? 0), `gap in ${r.partition}`)
      nextOffset[r.partition] = off + 1
    }
    return `400 records, 16 keys over ${Object.keys(nextOffset).length} partitions`
  },

  async 'groups.commit_resume' () {
    await produce(Array.from({ length: 30 }, (_, i) => ({ key: `k${i}`, value: `old-${i}` })))
    const consume = async (count) => {
      const c = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500 })
      const got = []
      await c.connect()
      await c.subscribe({ topics: [topic()], fromBeginning: true })
      await c.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          got.push(message.value.toString())
          await c.commitOffsets([{ topic: topic(), partition, offset: String(parseInt(message.offset, 10) + 1) }])
        },
      })
      await until(30, `${count} records (got ${got.length})`, () => got.length >= count)
      await c.disconnect()
      return got
    }
    await consume(30)
    const admin = kafka.admin()
    await admin.connect()
    const committed = await admin.fetchOffsets({ groupId: group, topics: [topic()] })
    const total = committed[0].partitions.reduce((a, p) => a + parseInt(p.offset, 10), 0)
    await admin.disconnect()
    check(total === 30, `committed offsets sum to ${total}`)
    await produce(Array.from({ length: 10 }, (_, i) => ({ key: `k${i}`, value: `new-${i}` })))
    const again = (await consume(10)).sort()
    check(again.join() === Array.from({ length: 10 }, (_, i) => `new-${i}`).sort().join(), `resumed with ${again.slice(0, 5)}`)
    return '30 committed, resumed at the next 10'
  },

  async 'groups.rebalance' () {
    const member = async () => {
      const c = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500 })
      c.on(c.events.GROUP_JOIN, (e) => {
        const parts = (e.payload.memberAssignment[topic()] || []).slice().sort()
        process.stdout.write(`ASSIGNED ${parts.join(',')}\n`)
      })
      await c.connect()
      await c.subscribe({ topics: [topic()] })
      await c.run({ eachMessage: async () => {} })
      return c
    }
    if (args.role === 'member') {
      await member()
      await new Promise(() => {}) // until killed
    }
    const child = spawn(process.execPath, [__filename, args.feature, '--bootstrap', args.bootstrap,
      '--prefix', args.prefix, '--role', 'member'], { stdio: ['ignore', 'pipe', 'inherit'] })
    try {
      const lines = readline.createInterface({ input: child.stdout })
      await new Promise((resolve, reject) => {
        lines.on('line', (l) => { if (l.startsWith('ASSIGNED ') && l.trim() !== 'ASSIGNED') resolve() })
        child.on('exit', () => reject(new CheckFailed('the other member exited')))
      })
      let mine = []
      const c = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500 })
      c.on(c.events.GROUP_JOIN, (e) => { mine = (e.payload.memberAssignment[topic()] || []).slice().sort() })
      await c.connect()
      await c.subscribe({ topics: [topic()] })
      await c.run({ eachMessage: async () => {} })
      await until(60, 'a shared assignment', () => mine.length > 0 && mine.length < 4)
      const shared = mine
      child.kill('SIGKILL')
      await until(60, 'all partitions after the member was killed', () => mine.length === 4)
      await c.disconnect()
      return `had [${shared}], took over all 4 after SIGKILL of the other member`
    } finally {
      child.kill('SIGKILL')
    }
  },

  async 'admin.topics' () {
    const admin = kafka.admin()
    await admin.connect()
    try {
      const t = topic('created')
      await admin.createTopics({ topics: [{ topic: t, numPartitions: 2 }], waitForLeaders: true })
      const count = async () => (await admin.fetchTopicMetadata({ topics: [t] })).topics[0].partitions.length
      await until(20, `${t} with 2 partitions`, async () => (await count()) === 2)
      await admin.createPartitions({ topicPartitions: [{ topic: t, count: 5 }] })
      await until(20, `${t} with 5 partitions`, async () => (await count()) === 5)
      await admin.deleteTopics({ topics: [t] })
      await until(20, `${t} deleted`, async () => !(await admin.listTopics()).includes(t))
      return 'created 2, grew to 5, deleted'
    } finally {
      await admin.disconnect()
    }
  },

  async 'admin.configs' () {
    const admin = kafka.admin()
    await admin.connect()
    try {
      const describe = async (type, name) => {
        const res = await admin.describeConfigs({ resources: [{ type, name }], includeSynonyms: false })
        return Object.fromEntries(res.resources[0].configEntries.map((e) => [e.configName, e.configValue]))
      }
      const before = await describe(ConfigResourceTypes.TOPIC, topic())
      check(before['retention.ms'] === '604800000', `retention.ms ${before['retention.ms']}`)
      await admin.alterConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic(), configEntries: [{ name: 'retention.ms', value: '86400000' }] }] })
      const after = await describe(ConfigResourceTypes.TOPIC, topic())
      check(after['retention.ms'] === '86400000', `after alter: ${after['retention.ms']}`)
      const broker = await describe(ConfigResourceTypes.BROKER, '1')
      check('num.partitions' in broker, 'broker configs')
      return `described ${Object.keys(after).length} topic configs, altered retention.ms`
    } finally {
      await admin.disconnect()
    }
  },

  async idempotent () {
    const msgs = Array.from({ length: 200 }, (_, i) => ({ partition: i % 2, value: String(i) }))
    await produce(msgs, { acks: -1 }, { idempotent: true, maxInFlightRequests: 1 })
    const got = (await readAll(topic(), 200)).map((r) => parseInt(r.value.toString(), 10)).sort((a, b) => a - b)
    check(got.every((v, i) => v === i) && got.length === 200, 'duplicates or gaps')
    return '200 records exactly once'
  },

  async transactions () {
    const p = kafka.producer({ transactionalId: `${args.prefix}.txn`, idempotent: true, maxInFlightRequests: 1 })
    await p.connect()
    let txn = await p.transaction()
    await txn.send({ topic: topic(), messages: [0, 1, 2].map((i) => ({ partition: 0, value: `committed-${i}` })) })
    await txn.commit()
    txn = await p.transaction()
    await txn.send({ topic: topic(), messages: [0, 1, 2].map((i) => ({ partition: 1, value: `aborted-${i}` })) })
    await txn.abort()
    txn = await p.transaction()
    await txn.send({ topic: topic(), messages: [{ partition: 1, value: 'final' }] })
    await txn.commit()
    await p.disconnect()
    const committed = (await readAll(topic(), 4)).map((r) => r.value.toString()).sort()
    check(committed.join() === ['committed-0', 'committed-1', 'committed-2', 'final'].join(), `read_committed saw ${committed}`)
    const all = await readAll(topic(), 7, { readUncommitted: true })
    check(all.length === 7, `read_uncommitted saw ${all.length}`)
    return 'read_committed hid the aborted transaction'
  },

  async offsets_by_timestamp () {
    const base = Date.now() - 60000
    await produce(Array.from({ length: 5 }, (_, i) => ({ partition: 0, value: String(i), timestamp: String(base + i * 1000) })))
    const admin = kafka.admin()
    await admin.connect()
    try {
      const found = await admin.fetchTopicOffsetsByTimestamp(topic(), base + 1500)
      check(found[0].offset === '2', `offset for t+1.5s: ${found[0].offset}`)
      // Past the last record Kafka answers -1; kafkajs then reports the high watermark.
      const after = await admin.fetchTopicOffsetsByTimestamp(topic(), base + 10000)
      check(after[0].offset === '5', `past the end: ${after[0].offset}`)
      const w = (await admin.fetchTopicOffsets(topic()))[0]
      check(w.low === '0' && w.high === '5', `watermarks ${w.low}..${w.high}`)
      return 't+1.5s -> offset 2'
    } finally {
      await admin.disconnect()
    }
  },

  async large_messages () {
    const value = crypto.randomBytes(4 * 1024 * 1024)
    const p = kafka.producer()
    await p.connect()
    try {
      await p.send({ topic: topic('big'), messages: [{ value }] })
      try {
        await p.send({ topic: topic('default'), messages: [{ value: crypto.randomBytes(2 * 1024 * 1024) }] })
        throw new CheckFailed('2 MiB record accepted by a topic with max.message.bytes 1048588')
      } catch (e) {
        if (e instanceof CheckFailed) throw e
        check(e.type === 'MESSAGE_TOO_LARGE' || /too large/i.test(e.message), `refused with ${e.type}: ${e.message}`)
      }
    } finally {
      await p.disconnect()
    }
    const got = await readAll(topic('big'), 1)
    check(got[0].value.equals(value), '4 MiB value differs')
    return '4 MiB round trip; 2 MiB refused with MESSAGE_TOO_LARGE'
  },
}

// --- failover: the same script as drivers/common.py (Failover, check_failover) ---------------
const FAILOVER = { partitions: 3, before: 150, after: 150, slice: 10, pace: 30 }
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms)) // pacing, not a sync

async function failoverLeader (admin, cluster, killed) {
  try {
    const md = await admin.fetchTopicMetadata({ topics: [topic()] })
    return md.topics[0].partitions.find((p) => p.partitionId === 0).leader
  } catch (e) {
    return -1 // asked a dead broker, or no leader right now
  }
}

// Every acknowledged record read back exactly once, in order per partition. `consumed` holds
// {partition, offset, seq} in delivery order; a consumer group may deliver an offset again after
// a rebalance (at-least-once), which is counted, not a duplicate in the log.
function checkFailover (acked, consumed, sent, victim, during) {
  const seen = new Map(); const last = new Map(); const offsets = new Set(); let redelivered = 0
  for (const { partition, offset, seq } of consumed) {
    const key = `${partition}:${offset}`
    if (offsets.has(key)) { redelivered++; continue }
    offsets.add(key)
    check(!seen.has(seq), `record ${seq} read twice`)
    seen.set(seq, offset)
    check(partition === seq % FAILOVER.partitions, `record ${seq} on partition ${partition}`)
    const [prevOffset, prevSeq] = last.get(partition) || [-1, -1]
    check(offset > prevOffset, `partition ${partition}: offset ${offset} after ${prevOffset}`)
    check(seq > prevSeq, `partition ${partition}: record ${seq} after ${prevSeq}`)
    last.set(partition, [offset, seq])
  }
  const missing = [...acked].filter((s) => !seen.has(s)).sort((a, b) => a - b)
  check(missing.length === 0, `${missing.length} acknowledged records never read, e.g. ${missing.slice(0, 5)}`)
  let detail = `${acked.size}/${sent} acknowledged, each read once in order; leader ${victim} of ` +
    `partition 0 SIGKILLed mid-stream, ${during} records sent during the election`
  if (redelivered) detail += `; the group redelivered ${redelivered} after a rebalance`
  return detail
}

features.failover = async function () {
  const raw = process.env.COMPAT_CLUSTER
  check(raw, 'COMPAT_CLUSTER is not set: run failover through compat-tests/run.py')
  const cluster = JSON.parse(raw).brokers
  // Retries that outlast an election (~3 s with the matrix's ZooKeeper session of 3 s).
  const client = new Kafka({
    clientId: 'compat-kafkajs-failover',
    brokers: args.bootstrap.split(','),
    logLevel: logLevel.ERROR,
    logCreator: () => ({ namespace, label, log: l }) => log(`[${label}] ${namespace} ${l.message} ${l.error || ''}`),
    retry: { retries: 12, initialRetryTime: 200, maxRetryTime: 2000 },
  })
  const admin = client.admin()
  await admin.connect()
  const consumed = []
  const consumer = client.consumer({ groupId: `${args.prefix}.reader`, sessionTimeout: 10000, heartbeatInterval: 500 })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic()], fromBeginning: true })
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      consumed.push({ partition, offset: parseInt(message.offset, 10), seq: parseInt(message.value.toString(), 10) })
    },
  })
  const producer = client.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false })
  await producer.connect()
  const acked = new Set()
  const failures = []
  // kafkajs's idempotent producer wants one request in flight: sends are chained, so the stream
  // goes on handing records over while the client retries through the election.
  let chain = Promise.resolve()
  let seq = 0
  const step = async () => {
    const seqs = Array.from({ length: FAILOVER.slice }, (_, i) => seq + i)
    seq += FAILOVER.slice
    chain = chain.then(() => producer.send({
      topic: topic(), acks: -1, messages: seqs.map((s) => ({ partition: s % FAILOVER.partitions, value: String(s) })),
    })).then(() => seqs.forEach((s) => acked.add(s)), (e) => failures.push(`${e.name}: ${e.message}`))
    await sleep(FAILOVER.pace)
  }
  try {
    while (seq < FAILOVER.before) await step()
    const victim = await failoverLeader(admin)
    check(cluster[victim] && cluster[victim].pid, `partition 0 has no leader to kill (${victim})`)
    process.kill(cluster[victim].pid, 'SIGKILL')
    log(`SIGKILLed broker ${victim}, leader of ${topic()}-0`)
    const killedAt = seq
    const end = Date.now() + 60000
    for (;;) {
      const leader = await failoverLeader(admin)
      if (leader !== -1 && leader !== victim) break
      check(Date.now() < end, `timed out waiting for a new leader of ${topic()}-0`)
      await step()
    }
    const during = seq - killedAt
    const stop = seq + FAILOVER.after
    while (seq < stop) await step()
    await chain
    check(failures.length === 0, `sends failed: ${failures.slice(0, 3).join('; ')}`)
    await until(60, `${acked.size} acknowledged records read back`, () => {
      const read = new Set(consumed.map((r) => r.seq))
      return [...acked].every((s) => read.has(s))
    })
    return checkFailover(acked, consumed, seq, victim, during)
  } finally {
    await producer.disconnect().catch(() => {})
    await consumer.disconnect().catch(() => {})
    await admin.disconnect().catch(() => {})
  }
}

async function main () {
  const fn = features[args.feature]
  let status = 'pass'; let detail = ''; let code = 0
  if (!fn) {
    status = 'n/a'; detail = 'no driver for this feature'; code = 3
  } else {
    try {
      detail = (await fn()) || ''
    } catch (e) {
      if (e instanceof NotSupported) { status = 'n/a'; code = 3 } else { status = 'fail'; code = 1 }
      detail = e instanceof CheckFailed || e instanceof NotSupported ? e.message : `${e.name}: ${e.message}`
      if (!(e instanceof CheckFailed)) log(e.stack)
    }
  }
  process.stdout.write('RESULT ' + JSON.stringify({ status, detail }) + '\n', () => process.exit(code))
}

main()
