#!/usr/bin/env node
// RocketMQ compatibility scenarios with npm `ali-ons` 3.12.0 (a pure JavaScript 4.x remoting
// client, not built on Apache's C++ core). Run by tests/e2e/compat.rs against `meridian dev`;
// nothing here is written against Meridian: it is what an ali-ons application does. Usage:
//
//     node ali_ons.js ALI_ONS_DIR NAMESRV TOPIC GROUP tags COUNT
//     node ali_ons.js ALI_ONS_DIR NAMESRV TOPIC GROUP retry
//     node ali_ons.js ALI_ONS_DIR NAMESRV TOPIC GROUP transaction
//
// ALI_ONS_DIR is where scripts/install-rocketmq-clients.sh installed it (MERIDIAN_TEST_ALI_ONS).
// Prints one JSON line {"sent": [...], "received": [...], "errors": [...], ...} and exits 0 when
// the client saw what it must. With ROCKETMQ_ACCESS_KEY and ROCKETMQ_SECRET_KEY set, ali-ons
// signs every request with them.
//
// `tags`: sends COUNT messages tagged TagA (keys `key-TagA-i`) and COUNT tagged TagB; a push
// consumer subscribed to `TagA` must receive exactly the TagA messages (bodies, keys, tags, the
// offset msgIds the producer got back; no TagB; none twice).
//
// `retry`: sends one message the consumer fails the first time (ACTION_RETRY, so ali-ons sends it
// back with CONSUMER_SEND_MSG_BACK); it must come again, from `%RETRY%GROUP`, with reconsumeTimes
// 1 and the same body.
//
// `transaction`: ali-ons 3.12 has no transaction API above its remoting layer, so the scenario
// uses that layer as its own producer does: a half message (property TRAN_MSG, which ali-ons
// turns into the prepared sysFlag) is sent through `producer.send`, then the application answers
// the broker's CHECK_TRANSACTION_STATE on the producer's connection with END_TRANSACTION, using
// ali-ons's RemotingCommand. Key `tx-commit` is committed by the check-back and key `tx-rollback`
// rolled back; a consumer must then receive exactly the committed one.

'use strict';

const path = require('path');

const [aliOnsDir, nameSrv, topic, group, mode, countArg] = process.argv.slice(2);
const ons = require(path.join(aliOnsDir, 'node_modules', 'ali-ons'));
const RemotingCommand = require(path.join(aliOnsDir, 'node_modules', 'ali-ons', 'lib', 'protocol', 'command', 'remoting_command'));

const { Producer, Consumer, Message } = ons;

// ali-ons fetches the nameserver list over HTTP only when `nameSrv` is not given; it asserts the
// option exists, so give it one that says so if it is ever used.
const httpclient = {
  request() {
    throw new Error('ali-ons asked for the nameserver list over HTTP although nameSrv is set');
  },
};

// Quiet: ali-ons logs through console by default.
const logger = {
  info() {},
  debug() {},
  warn() {},
  error(err) {
    process.stderr.write(`ali-ons error: ${err && err.stack ? err.stack : err}\n`);
  },
};

const common = {
  httpclient,
  nameSrv,
  // ROCKETMQ_ACCESS_KEY / ROCKETMQ_SECRET_KEY: sign every request (RocketMQ AccessKey signatures).
  accessKeyId: process.env.ROCKETMQ_ACCESS_KEY || '',
  accessKeySecret: process.env.ROCKETMQ_SECRET_KEY || '',
  logger,
  // Short timers so scenarios do not wait on ali-ons's 30 s defaults.
  rebalanceInterval: 2000,
  persistConsumerOffsetInterval: 1000,
};

const errors = [];

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

async function waitFor(condition, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (condition()) {
      return true;
    }
    await sleep(100);
  }
  return condition();
}

function describe(msg) {
  return {
    id: msg.msgId,
    body: msg.body ? msg.body.toString() : '',
    keys: msg.keys || null,
    tag: msg.tags || null,
    topic: msg.topic,
    reconsume_times: msg.reconsumeTimes,
    uniq_key: msg.properties && msg.properties.UNIQ_KEY ? msg.properties.UNIQ_KEY : null,
  };
}

function newProducer(producerGroup) {
  return new Producer(Object.assign({}, common, { producerGroup, instanceName: `${producerGroup}-${process.pid}` }));
}

function newConsumer() {
  const consumer = new Consumer(Object.assign({}, common, {
    consumerGroup: group,
    instanceName: `${group}-${process.pid}`,
    consumeFromWhere: 'CONSUME_FROM_FIRST_OFFSET',
  }));
  consumer.on('error', err => {
    // A handler that fails on purpose is reported through 'error' too.
    if (!String(err && err.message).includes('on purpose')) {
      process.stderr.write(`consumer error: ${err && err.stack ? err.stack : err}\n`);
    }
  });
  return consumer;
}

async function tags(count) {
  const producer = newProducer('ali-ons-producer');
  producer.on('error', err => errors.push(`producer error: ${err.message}`));
  await producer.ready();
  const sent = [];
  for (const tag of [ 'TagA', 'TagB' ]) {
    for (let i = 0; i < count; i++) {
      const msg = new Message(topic, tag, `${tag}-body-${i}`);
      msg.keys = [ `key-${tag}-${i}` ];
      const result = await producer.send(msg);
      if (result.sendStatus !== 'SEND_OK') {
        errors.push(`send ${tag} ${i}: ${result.sendStatus}`);
      }
      sent.push({ id: result.msgId, tag, keys: `key-${tag}-${i}`, body: `${tag}-body-${i}`, queue: result.messageQueue.queueId, queue_offset: result.queueOffset });
    }
  }
  await producer.close();

  const received = [];
  const consumer = newConsumer();
  consumer.subscribe(topic, 'TagA', async msg => {
    received.push(describe(msg));
  });
  await consumer.ready();
  await waitFor(() => received.length >= count, 60000);
  // The quiet period is what is tested: anything more (another tag, a duplicate) would arrive now.
  await sleep(1500);
  await consumer.close();

  const expected = sent.filter(entry => entry.tag === 'TagA');
  for (const entry of expected) {
    const got = received.filter(msg => msg.id === entry.id);
    if (got.length !== 1) {
      errors.push(`${entry.keys} (${entry.id}) received ${got.length} times`);
    } else if (got[0].body !== entry.body || got[0].keys !== entry.keys || got[0].tag !== 'TagA') {
      errors.push(`${entry.keys} arrived as ${JSON.stringify(got[0])}`);
    }
  }
  for (const msg of received) {
    if (msg.tag !== 'TagA') {
      errors.push(`a ${msg.tag} message reached the TagA subscriber: ${JSON.stringify(msg)}`);
    }
  }
  if (received.length !== expected.length) {
    errors.push(`received ${received.length} messages, expected ${expected.length}`);
  }
  return { sent, received };
}

async function retry() {
  const producer = newProducer('ali-ons-retry-producer');
  await producer.ready();
  const msg = new Message(topic, 'TagF', 'fail-once-body');
  msg.keys = [ 'fail-once' ];
  const result = await producer.send(msg);
  await producer.close();
  const sent = [{ id: result.msgId, keys: 'fail-once', body: 'fail-once-body' }];

  const deliveries = [];
  const consumer = newConsumer();
  consumer.subscribe(topic, 'TagF', async msg => {
    deliveries.push(describe(msg));
    if (deliveries.length === 1) {
      return Consumer.ACTION_RETRY;
    }
  });
  await consumer.ready();
  await waitFor(() => deliveries.length >= 2, 90000);
  // The quiet period is what is tested: no third delivery within 1.5 s.
  await sleep(1500);
  await consumer.close();

  if (deliveries.length !== 2) {
    errors.push(`expected the message twice (failed once, then again), got ${deliveries.length}: ${JSON.stringify(deliveries)}`);
  } else {
    const [ first, again ] = deliveries;
    if (first.id !== result.msgId || first.reconsume_times !== 0) {
      errors.push(`first delivery ${JSON.stringify(first)} is not the sent message ${result.msgId}`);
    }
    if (again.body !== 'fail-once-body' || again.keys !== 'fail-once' || again.reconsume_times !== 1) {
      errors.push(`redelivery ${JSON.stringify(again)} should be the same body and keys with reconsumeTimes 1`);
    }
    if (again.topic !== topic) {
      errors.push(`the redelivery should be handed to the application as ${topic}, not ${again.topic}`);
    }
  }
  return { sent, deliveries };
}

async function transaction() {
  const producerGroup = 'ali-ons-tx-producer';
  const producer = newProducer(producerGroup);
  await producer.ready();
  const decisions = { 'tx-commit': 8, 'tx-rollback': 12 };
  const checks = [];
  // The broker's CHECK_TRANSACTION_STATE arrives on the producer's broker connection; ali-ons
  // emits it as 'request'. The application decides from the message's key.
  producer._mqClient.on('request', (entity, address) => {
    const command = entity.data;
    if (command.code !== 39) {
      return;
    }
    const header = command.extFields || {};
    let keys = null;
    try {
      // The body is the half message in the stored-message encoding.
      const ByteBuffer = require(path.join(aliOnsDir, 'node_modules', 'byte'));
      const decoder = require(path.join(aliOnsDir, 'node_modules', 'ali-ons', 'lib', 'message', 'message_decoder'));
      const msg = decoder.decode(ByteBuffer.wrap(command.body));
      keys = msg.keys;
    } catch (err) {
      errors.push(`check-back body unreadable: ${err.message}`);
      return;
    }
    checks.push({ keys, msgId: header.msgId, offsetMsgId: header.offsetMsgId });
    const end = RemotingCommand.createRequestCommand(37, {
      producerGroup,
      tranStateTableOffset: header.tranStateTableOffset,
      commitLogOffset: header.commitLogOffset,
      commitOrRollback: decisions[keys] || 0,
      fromTransactionCheck: true,
      msgId: header.msgId,
      transactionId: header.transactionId,
    });
    producer._mqClient.invokeOneway(address, end).catch(err => errors.push(`END_TRANSACTION: ${err.message}`));
  });
  const sent = [];
  for (const key of Object.keys(decisions)) {
    const msg = new Message(topic, 'TagT', `${key}-body`);
    msg.keys = [ key ];
    msg.properties.TRAN_MSG = 'true';
    msg.properties.PGROUP = producerGroup;
    const result = await producer.send(msg);
    sent.push({ id: result.msgId, keys: key, status: result.sendStatus });
  }
  await waitFor(() => checks.length >= 2, 60000);

  const received = [];
  const consumer = newConsumer();
  consumer.subscribe(topic, '*', async msg => {
    received.push(describe(msg));
  });
  await consumer.ready();
  await waitFor(() => received.length >= 1, 60000);
  // The quiet period is what is tested: the rolled-back message never arrives within 2 s.
  await sleep(2000);
  await consumer.close();
  await producer.close();

  if (checks.length < 2) {
    errors.push(`the broker asked about ${checks.length} of 2 half messages`);
  }
  if (received.length !== 1 || received[0].keys !== 'tx-commit' || received[0].body !== 'tx-commit-body') {
    errors.push(`expected exactly the committed message, got ${JSON.stringify(received)}`);
  }
  return { sent, checks, received };
}

async function main() {
  let report;
  if (mode === 'tags') {
    report = await tags(Number(countArg || 3));
  } else if (mode === 'retry') {
    report = await retry();
  } else if (mode === 'transaction') {
    report = await transaction();
  } else {
    throw new Error(`unknown mode ${mode}: tags COUNT, retry or transaction`);
  }
  report.errors = errors;
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exit(errors.length ? 1 : 0);
}

main().catch(err => {
  errors.push(`scenario failed: ${err && err.stack ? err.stack : err}`);
  process.stdout.write(`${JSON.stringify({ errors })}\n`);
  process.exit(1);
});
