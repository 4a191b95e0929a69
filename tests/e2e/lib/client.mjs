// RelayUser (one Signal party on the relay, single device) lives in the client library
// (clients/js/src/user.mjs); this module re-exports it with the Signal and relay halves, as the
// tests import them.
export * from './signal.mjs';
export * from './relay.mjs';
export { RelayUser, uniqueUsername, randomPassword } from '../../../clients/js/src/user.mjs';
