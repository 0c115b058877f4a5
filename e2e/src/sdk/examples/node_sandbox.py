import asyncio
from microsandbox import NodeSandbox

async def main():
    async with NodeSandbox.create(name="node-demo") as sb:
        # 执行JavaScript代码
        exec = await sb.run("console.log('Hello from Node.js!');")
        print("输出:", await exec.output())
        
        # 使用Node.js内置模块
        node_code = """
const fs = require('fs');
const os = require('os');

// 写入和读取文件
fs.writeFileSync('/tmp/test.txt', 'Hello from Node.js!');
const content = fs.readFileSync('/tmp/test.txt', 'utf8');
console.log('文件内容:', content);

// 获取系统信息
console.log('平台:', os.platform());
console.log('Node.js版本:', process.version);
"""
        exec = await sb.run(node_code)
        print(await exec.output())

asyncio.run(main())
