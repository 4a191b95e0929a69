// A client process that test/ack.test.mjs kills (SIGKILL, sent by this process to itself) at a
// chosen point of receiving, as a crashed app dies: the connection drops without a Close frame,
// nothing more is saved or acknowledged, and the FileStore's lock stays behind.
//
//   node test/killed-client.mjs '{"url":…,"dir":…,"username":…,"password":…,"die":…}'
//     die: "on-arrival"    as an envelope reaches the socket, before the client sees it
//          "after-report"  at the first 'message' event: saved and reported, not acknowledged
//
// One JSON line per event on stdout: {"state"}, {"message":{id,text}}, {"error"}.
import { writeSync } from 'node:fs';
import { RelayClient, FileStore, RelaySocket } from '../src/index.mjs';

const { url, dir, username, password, die } = JSON.parse(process.argv[2]);
// Synchronous: the line is out before the process kills itself.
const report = (event) => writeSync(1, `${JSON.stringify(event)}\n`);
const kill = () => process.kill(process.pid, 'SIGKILL');

if (die === 'on-arrival') {
  const connect = RelaySocket.connect;
  RelaySocket.connect = async function (...args) {
    const sock = await connect.apply(this, args);
    const onFrame = sock.onFrame.bind(sock);
    sock.onFrame = (data, isBinary) => {
      let frame = null;
      try {
        frame = JSON.parse(data.toString());
      } catch {
        /* not JSON: the client deals with it */
      }
      if (frame?.type === 'messages' && frame.messages?.length) kill();
      onFrame(data, isBinary);
    };
    return sock;
  };
}

const client = await RelayClient.open({ url, store: new FileStore(dir), username, password });
client.on('state', (state) => report({ state }));
client.on('error', (e) => report({ error: e.message }));
client.on('message', (m) => {
  report({ message: { id: m.id, text: m.text } });
  if (die === 'after-report') kill();
});
await client.connect();
