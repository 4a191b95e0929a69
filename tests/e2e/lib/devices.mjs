// Several devices per account (RelayDevice, linking, provisioning crypto, the multi-device send)
// live in the client library (clients/js/src/devices.mjs, provisioning.mjs).
export * from '../../../clients/js/src/devices.mjs';
