"""Package set-up, driven by settings.ini (nbdev 2 style)."""
import shlex
from configparser import ConfigParser

import setuptools

config = ConfigParser(delimiters=["="])
config.read("settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

licenses = {"apache2": ("Apache Software License 2.0", "OSI Approved :: Apache Software License")}
statuses = ["Planning", "Pre-Alpha", "Alpha", "Beta", "Production/Stable", "Mature", "Inactive"]
lic = licenses[cfg["license"]]

requirements = shlex.split(cfg.get("requirements", ""))
dev_requirements = shlex.split(cfg.get("dev_requirements", ""))

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=long_description,
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    license=lic[0],
    classifiers=[
        f"Development Status :: {cfg['status']} - {statuses[int(cfg['status'])]}",
        f"Intended Audience :: {cfg['audience']}",
        f"License :: {lic[1]}",
        f"Natural Language :: {cfg['language']}",
        "Programming Language :: Python :: 3.11",
    ],
    keywords=cfg["keywords"],
    packages=setuptools.find_packages(include=[cfg["lib_name"], cfg["lib_name"] + ".*"]),
    include_package_data=True,
    install_requires=requirements,
    extras_require={"dev": dev_requirements},
    python_requires=">=" + cfg["min_python"],
    zip_safe=False,
    entry_points={
        "nbdev": [f"{cfg['lib_name']}={cfg['lib_name']}._modidx:d"],
        # lets Nengo tools (and nengo's own tests) find this simulator
        "nengo.backends": [f"{cfg['lib_name']}={cfg['lib_name']}:Simulator"],
    },
)
