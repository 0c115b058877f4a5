import asyncio
from microsandbox import PythonSandbox

async def main():
    async with PythonSandbox.create(name="my-first-sandbox") as sb:
        # 执行Python代码
        exec = await sb.run("name = 'World'")
        exec = await sb.run("print(f'Hello {name}!')")
        
        # 获取输出
        output = await exec.output()
        print(output)  # 输出: Hello World!

asyncio.run(main())
