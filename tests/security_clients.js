// kafkajs over a secured listener (tests/test_security_clients.py): produce one record, read it
// back as a consumer group member, print {"ok": true} or the error. argv[2]: a JSON config.
const { Kafka, logLevel } = require("kafkajs");
const fs = require("fs");

async function main() {
  const cfg = JSON.parse(process.argv[2]);
  const ssl = cfg.ca ? { ca: [fs.readFileSync(cfg.ca, "utf8")] } : undefined;
  if (ssl && cfg.cert) {
    ssl.cert = fs.readFileSync(cfg.cert, "utf8");
    ssl.key = fs.readFileSync(cfg.key, "utf8");
  }
  const kafka = new Kafka({
    clientId: "security-test", brokers: [cfg.broker], ssl, sasl: cfg.sasl,
    logLevel: logLevel.NOTHING, retry: { retries: cfg.retries ?? 5 },
  });
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic: cfg.topic, messages: [{ value: cfg.value }] });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: cfg.topic + "-g", sessionTimeout: 6000, rebalanceTimeout: 3000 });
  await consumer.connect();
  await consumer.subscribe({ topic: cfg.topic, fromBeginning: true });
  const got = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no record within 30 s")), 30000);
    consumer.run({ eachMessage: async ({ message }) => { clearTimeout(timer); resolve(message.value.toString()); } });
  });
  await consumer.disconnect();
  console.log(JSON.stringify({ ok: got === cfg.value, got }));
}

main().catch((e) => { console.log(JSON.stringify({ ok: false, error: `${e.name}: ${e.message}` })); process.exit(0); });
