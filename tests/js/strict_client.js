// A charge point on ocpp-rpc (strict mode: every payload it sends and receives is
// schema-checked by ocpp-rpc itself). Usage: node strict_client.js ENDPOINT IDENTITY PROTOCOL
// Prints one JSON line per step; exits non-zero on any error.
'use strict';
const { RPCClient } = require('ocpp-rpc');

const print = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

async function main() {
  const [endpoint, identity, protocol] = process.argv.slice(2);
  const client = new RPCClient({ endpoint, identity, protocols: [protocol], strictMode: true, reconnect: false });
  const resetReceived = new Promise((resolve) => {
    client.handle('Reset', ({ params }) => {
      resolve(params);
      return { status: 'Accepted' };
    });
  });
  await client.connect();
  print({ step: 'connected', protocol: client.protocol });
  const boot = protocol === 'ocpp1.6'
    ? { chargePointVendor: 'ocpp-rpc', chargePointModel: 'strict' }
    : { reason: 'PowerUp', chargingStation: { model: 'strict', vendorName: 'ocpp-rpc' } };
  print({ step: 'boot', result: await client.call('BootNotification', boot) });
  print({ step: 'heartbeat', result: await client.call('Heartbeat', {}) });
  print({ step: 'reset', params: await resetReceived });
  await client.close({ code: 1000 });
  print({ step: 'closed' });
}

main().catch((err) => {
  print({ step: 'error', message: String(err && err.message || err) });
  process.exit(1);
});
