// Start kinesalite on 127.0.0.1 only (its CLI binds every interface). argv: PORT [DATA_DIR]
require('kinesalite')({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100, path: process.argv[3]}).listen(Number(process.argv[2]), '127.0.0.1')
