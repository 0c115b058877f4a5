import { NodeSandbox } from "microsandbox";

async function main() {
    const sb = await NodeSandbox.create({ name: "my-first-sandbox" });
    try {
        // 执行JavaScript代码
        let exec = await sb.run("var name = 'World'");
        exec = await sb.run("console.log(`Hello ${name}!`)");
        
        // 获取输出
        const output = await exec.output();
        console.log(output); // 输出: Hello World!
    } finally {
        await sb.stop();
    }
}

main().catch(console.error);
