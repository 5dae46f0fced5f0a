// Creates a blob container on an Azure Blob Storage endpoint (Azurite in the archive's tests:
// object_store has no call for it). Run with NODE_PATH at the node_modules that
// scripts/install-azurite.sh installs.
//
// Usage: node scripts/azurite-container.js ENDPOINT ACCOUNT KEY CONTAINER
const { BlobServiceClient, StorageSharedKeyCredential } = require("@azure/storage-blob");

const [endpoint, account, key, container] = process.argv.slice(2);
if (!container) {
    console.error("usage: node azurite-container.js ENDPOINT ACCOUNT KEY CONTAINER");
    process.exit(2);
}
const client = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(account, key));
client
    .getContainerClient(container)
    .createIfNotExists()
    .then(
        () => console.log(`container ${container} ready at ${endpoint}`),
        (error) => {
            console.error(`creating container ${container} at ${endpoint}: ${error.message}`);
            process.exit(1);
        },
    );
