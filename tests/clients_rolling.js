// kafkajs side of tests/test_clients_rolling_cluster.py:
//   node clients_rolling.js BOOTSTRAP TOPIC
// An idempotent acks=all producer sends "js-N" one at a time and prints `ACK value partition
// offset` for each acknowledged record (`ERR value message` for a send that failed); a
// consumer group member reads the topic from the beginning and prints `GOT value partition
// offset`. A line "stop" on stdin stops the producer (then `SENT n`); stdin closing ends it all.
'use strict'

const readline = require('readline')
const { Kafka, logLevel } = require('kafkajs')

const [bootstrap, topic] = process.argv.slice(2)
const kafka = new Kafka({
  clientId: 'rolling-kafkajs',
  brokers: bootstrap.split(','),
  logLevel: logLevel.NOTHING,
  retry: { retries: 10, initialRetryTime: 100, maxRetryTime: 2000 },
})
const out = (line) => process.stdout.write(line + '\n')

let producing = true
let finished = null
const done = new Promise((resolve) => { finished = resolve })
readline.createInterface({ input: process.stdin })
  .on('line', (l) => { if (l.trim() === 'stop') producing = false })
  .on('close', () => finished())

async function produce () {
  const p = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false })
  await p.connect()
  let n = 0
  while (producing) {
    const value = `js-${n++}`
    try {
      const [r] = await p.send({ topic, acks: -1, messages: [{ value, partition: n % 2 }] })
      out(`ACK ${value} ${r.partition} ${r.baseOffset}`)
    } catch (e) {
      out(`ERR ${value} ${String(e.message).replace(/\s+/g, ' ')}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 10)) // a steady rate, not a sync
  }
  out(`SENT ${n}`)
  await p.disconnect()
}

async function consume () {
  const c = kafka.consumer({ groupId: `rolling-${topic}`, sessionTimeout: 10000, heartbeatInterval: 1000 })
  await c.connect()
  await c.subscribe({ topics: [topic], fromBeginning: true })
  await c.run({
    eachMessage: async ({ partition, message }) => {
      out(`GOT ${message.value.toString()} ${partition} ${message.offset}`)
    },
  })
  return c
}

async function main () {
  const consumer = await consume()
  await produce()
  await done
  await consumer.disconnect()
  process.exit(0)
}

main().catch((e) => { out(`FATAL ${e.stack}`); process.exit(1) })
